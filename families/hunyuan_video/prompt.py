"""Tencent's video prompt template for the LLaVA-Llama-3 encoder, and where the user's words are in it.

The template wraps the prompt in a Llama-3 chat: a system turn describing what to look at, then the
user turn. The DiT conditions only on the user turn, so the template's tokens are cropped away. The crop
is found from the token ids (the last `<|end_header_id|>` and the blank line after it, the special
tokens looked up by their strings), never a fixed 95: that number holds only for the real Llama-3
tokenizer. The user turn keeps its closing `<|eot_id|>`; the tokenizer adds BOS itself.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from ...errors import InputError

log = logging.getLogger("hystream")

VIDEO_TEMPLATE = (
    "<|start_header_id|>system<|end_header_id|>\n\nDescribe the video by detailing the following aspects: "
    "1. The main content and theme of the video."
    "2. The color, shape, size, texture, quantity, text, and spatial relationships of the objects."
    "3. Actions, events, behaviors temporal relationships, physical movement changes of the objects."
    "4. background environment, light, style and atmosphere."
    "5. camera angles, movements, and transitions used in the video:<|eot_id|>"
    "<|start_header_id|>user<|end_header_id|>\n\n{}<|eot_id|>"
)
USER_TOKENS = 256  # the user turn's budget, the template excluded
CLIP_TOKENS = 77
HEADER_END = "<|end_header_id|>"


@dataclass
class TemplatedTokens:
    ids: list[int]  # template + user turn, BOS included, truncated to crop + USER_TOKENS
    crop: int  # index of the first user token
    dropped: int  # user tokens cut by truncation


def token_id(tokenizer, text: str) -> int:
    tid = tokenizer.convert_tokens_to_ids(text)
    if tid is None or tid == getattr(tokenizer, "unk_token_id", None):
        raise InputError(f"a Llama-3 tokenizer with the special token {text!r}", "a tokenizer without it",
                         "use the tokenizer that ships with LLaVA-Llama-3 (tokenizer.json)")
    return tid


def user_turn_start(ids: list[int], tokenizer) -> int:
    """Index of the first token of the user's text: after the last `<|end_header_id|>` and the tokens
    that spell the blank line the template puts after it (one token with Llama-3's tokenizer; found by
    decoding, so a tokenizer that splits it differently is handled too)."""
    header_end = token_id(tokenizer, HEADER_END)
    positions = [i for i, t in enumerate(ids) if t == header_end]
    if len(positions) < 2:
        raise InputError("a prompt in Tencent's two-turn template (system, then user)",
                         f"{len(positions)} end-of-header tokens", "do not put template tokens in the prompt")
    blank_line = VIDEO_TEMPLATE[VIDEO_TEMPLATE.rindex(HEADER_END) + len(HEADER_END):VIDEO_TEMPLATE.rindex("{}")]
    start = i = positions[-1] + 1
    while i < len(ids):
        spelled = tokenizer.decode(ids[start:i + 1])
        if not blank_line.startswith(spelled):
            break  # this token carries the user's text
        i += 1
        if spelled == blank_line:
            break
    return i


def template_tokens(prompt: str, tokenizer, max_user_tokens: int = USER_TOKENS) -> TemplatedTokens:
    ids = tokenizer(VIDEO_TEMPLATE.format(prompt), add_special_tokens=True)["input_ids"]
    bos = getattr(tokenizer, "bos_token_id", None)
    if bos is not None and len(ids) > 1 and ids[0] == bos and ids[1] == bos:
        ids = ids[1:]  # never two BOS
    crop = user_turn_start(ids, tokenizer)
    dropped = max(0, len(ids) - crop - max_user_tokens)
    if dropped:
        log.warning("HyStream: the prompt is %d tokens longer than the %d the text encoder reads; "
                    "the last %d tokens were dropped", dropped, max_user_tokens, dropped)
        ids = ids[: crop + max_user_tokens]
    return TemplatedTokens(ids, crop, dropped)


# -- HunyuanVideo-I2V: the image's tokens inside the system turn --------------------------------------------
I2V_TEMPLATE = (
    "<|start_header_id|>system<|end_header_id|>\n\n<image>\nDescribe the video by detailing the following aspects "
    "according to the reference image: "
    "1. The main content and theme of the video."
    "2. The color, shape, size, texture, quantity, text, and spatial relationships of the objects."
    "3. Actions, events, behaviors temporal relationships, physical movement changes of the objects."
    "4. background environment, light, style and atmosphere."
    "5. camera angles, movements, and transitions used in the video:<|eot_id|>\n\n"
    "<|start_header_id|>user<|end_header_id|>\n\n{}<|eot_id|>"
    "<|start_header_id|>assistant<|end_header_id|>\n\n"
)
IMAGE = "<image>"
ASSISTANT_HEAD = 4  # <|eot_id|> <|start_header_id|> assistant <|end_header_id|>: cut between the turns


@dataclass
class ImageTemplatedTokens:
    head: list[int]  # BOS + the tokens before the image (the image's features come next)
    tail: list[int]  # the tokens after the image
    user: tuple[int, int]  # the user's tokens within `tail`
    after: int  # where the kept suffix (the blank line after the assistant header) starts within `tail`
    dropped: int


def image_template_tokens(prompt: str, tokenizer, max_user_tokens: int = USER_TOKENS) -> ImageTemplatedTokens:
    """Tencent's I2V template around `prompt`, split where the image goes. Kept for the DiT, as the
    reference pipeline keeps them: the image's states, the user's tokens and the blank line after the
    assistant header (`<|eot_id|>` and the assistant header between them are cut)."""
    before, after = I2V_TEMPLATE.format(prompt).split(IMAGE, 1)
    head = tokenizer(before, add_special_tokens=True)["input_ids"]
    bos = getattr(tokenizer, "bos_token_id", None)
    if bos is not None and len(head) > 1 and head[0] == bos and head[1] == bos:
        head = head[1:]
    tail = tokenizer(after, add_special_tokens=False)["input_ids"]
    header_end = token_id(tokenizer, HEADER_END)
    ends = [i for i, t in enumerate(tail) if t == header_end]
    if len(ends) < 2:
        raise InputError("a prompt in Tencent's I2V template (user, then assistant turn)",
                         f"{len(ends)} end-of-header tokens after the image", "do not put template tokens in the prompt")
    start = user_turn_start(head + tail[:ends[-1]], tokenizer) - len(head)  # after the user's header
    end = ends[-1] - (ASSISTANT_HEAD - 1)
    dropped = max(0, end - start - max_user_tokens)
    if dropped:
        log.warning("HyStream: the prompt is %d tokens longer than the %d the text encoder reads; "
                    "the last %d tokens were dropped", dropped, max_user_tokens, dropped)
        tail = tail[:start + max_user_tokens] + tail[end:]
        end = start + max_user_tokens
    return ImageTemplatedTokens(head, tail, (start, end), end + ASSISTANT_HEAD, dropped)
