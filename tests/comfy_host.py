"""The real ComfyUI host for the tests (hystream.comfy_server) plus a websocket client that follows a
prompt the way the UI and automation users do."""

from __future__ import annotations

import json
import time

from hystream.comfy_server import PACK_FOLDER, ComfyHost, fetch_output, find_comfyui, upload  # noqa: F401

# A switch node as the popular switch packs write it: its output type "*" is a str whose != is always
# False, so ComfyUI lets it feed any input, combo boxes included (their value then reaches
# VALIDATE_INPUTS as None and the node at run time).
SWITCH_PACK = """
class AnyType(str):
    def __ne__(self, other):
        return False


class HyStreamTestSwitch:
    CATEGORY = "testing"
    RETURN_TYPES = (AnyType("*"),)
    FUNCTION = "pick"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"value": ("STRING", {"default": ""})}}

    def pick(self, value):
        return (value,)


NODE_CLASS_MAPPINGS = {"HyStreamTestSwitch": HyStreamTestSwitch}
"""


def run_prompt(host: ComfyHost, workflow: dict, timeout: float = 300, on_message=None) -> dict:
    """Queue an API-format workflow as an automation client does: open the websocket, POST /prompt,
    follow the messages to the end, fetch /history. Returns {"status", "messages", "history", "error"}."""
    import uuid

    import websocket

    client = uuid.uuid4().hex
    ws = websocket.create_connection(f"ws://127.0.0.1:{host.port}/ws?clientId={client}", timeout=timeout)
    try:
        code, answer = host.post("/prompt", {"prompt": workflow, "client_id": client})
        if code != 200:
            return {"status": "rejected", "code": code, "answer": answer, "messages": []}
        prompt_id = answer["prompt_id"]
        messages, status, error = [], None, None
        deadline = time.time() + timeout
        while status is None and time.time() < deadline:
            raw = ws.recv()
            if isinstance(raw, bytes):  # previews
                messages.append({"type": "preview", "data": {}})
                continue
            msg = json.loads(raw)
            data = msg.get("data", {})
            if data.get("prompt_id") not in (None, prompt_id):
                continue
            messages.append(msg)
            if on_message:
                on_message(msg)
            kind = msg["type"]
            if kind == "execution_success" or (kind == "executing" and data.get("node") is None and data.get("prompt_id") == prompt_id):
                status = "success"
            elif kind == "execution_error":
                status, error = "error", data
            elif kind == "execution_interrupted":
                status = "interrupted"
        if status is None:
            raise TimeoutError(f"prompt {prompt_id} did not finish in {timeout} s")
        history = {}
        while time.time() < deadline:  # the history entry lands just after the last websocket message
            history = host.get(f"/history/{prompt_id}").get(prompt_id, {})
            if history.get("status", {}).get("completed") is not None or history.get("outputs"):
                break
            time.sleep(0.1)
        return {"status": status, "messages": messages, "history": history, "error": error, "prompt_id": prompt_id}
    finally:
        ws.close()




def our_error_kinds() -> set[str]:
    """Class names of HyStream's error family (the `kind` users read first in a message)."""
    from hystream import errors

    return {c.__name__ for c in vars(errors).values() if isinstance(c, type) and issubclass(c, errors.HyStreamError)}


def outcome(result: dict) -> str:
    """'ok'; 'refused: …' (ComfyUI rejected the prompt at queue time, with its node errors); 'ours: …'
    (an execution error from HyStream's error family, with what/found/what-to-do); anything else is
    'generic: …' — a bare traceback a user would see, which the host tests treat as a failure."""
    if result["status"] == "success":
        return "ok"
    if result["status"] == "rejected":
        return "refused: " + json.dumps(result["answer"].get("node_errors") or result["answer"])[:600]
    err = result.get("error") or {}
    kind = str(err.get("exception_type", "")).rsplit(".", 1)[-1]
    message = str(err.get("exception_message", ""))
    if kind in our_error_kinds() and "expected" in message and "What to do" in message:
        return "ours: " + message[:600]
    return f"generic: {result['status']} {err.get('node_type')} {err.get('exception_type')}: {message[:600]}"
