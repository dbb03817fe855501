"""HunyuanVideo 1.5's prompt template for Qwen2.5-VL, where the user's words start in it, the quoted text the
ByT5 glyph encoder reads, and where both tokenizers are found.

The prompt is a two-turn chat (a system message describing what to look at, then the user's text), rendered
by the tokenizer's own chat template with the assistant turn opened. The DiT conditions on the tokens after
the template's head: the user's text and the 5 closing tokens (`<|im_end|>\\n<|im_start|>assistant\\n`). The
crop is the token count of the rendered head up to the last `<|im_start|>user\\n`, found by tokenizing it,
never a fixed number (diffusers hard-codes 108, right only for the real Qwen2.5 tokenizer).

Matches diffusers' `HunyuanVideo15Pipeline` (`format_text_input`, `_get_mllm_prompt_embeds`,
`extract_glyph_texts`, `_get_byt5_prompt_embeds`): the same system message byte for byte, at most 1000 tokens
after the crop (longer prompts are cut, with a warning; the reference cuts silently), an empty prompt
becomes " ". Padding is never computed (see text.py).
"""

from __future__ import annotations

import json
import logging
import os
import re
import weakref
from dataclasses import dataclass

from ...errors import CorruptFileError, InputError, NotFoundError
from ...loaders.tokenizer_files import TokenizerKind

log = logging.getLogger("hystream")

# diffusers (and Tencent) write the system message with backslash line continuations inside the string, so
# each item is preceded by the continuation's indentation: runs of 9 spaces, kept byte for byte.
_GAP = " " * 9
SYSTEM_MESSAGE = (
    "You are a helpful assistant. Describe the video by detailing the following aspects:"
    f"{_GAP}1. The main content and theme of the video."
    f"{_GAP}2. The color, shape, size, texture, quantity, text, and spatial relationships of the objects."
    f"{_GAP}3. Actions, events, behaviors temporal relationships, physical movement changes of the objects."
    f"{_GAP}4. background environment, light, style and atmosphere."
    f"{_GAP}5. camera angles, movements, and transitions used in the video."
)
TEXT_TOKENS = 1000  # read after the crop (the user's text + the closing tokens)
GLYPH_TOKENS = 256  # ByT5's budget, its end-of-sequence token included
USER_HEAD = "<|im_start|>user\n"
_SENTINEL = "\u2063HyStreamUserText\u2063"  # stands for the user's text when the template's head is measured
_CROPS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # tokenizer → its crop (measured once)


def chat(prompt: str) -> list[dict]:
    """The conversation the template renders (diffusers' format_text_input for one prompt)."""
    return [{"role": "system", "content": SYSTEM_MESSAGE}, {"role": "user", "content": prompt if prompt else " "}]


@dataclass
class TemplatedTokens:
    ids: list[int]  # the rendered template's tokens, truncated to crop + TEXT_TOKENS
    crop: int  # index of the first token the DiT sees (the user's text)
    dropped: int  # tokens cut by truncation (the user's text first, then the closing tokens, as the reference)


def _render(tokenizer, prompt: str, tokenize: bool):
    try:
        return tokenizer.apply_chat_template(chat(prompt), add_generation_prompt=True, tokenize=tokenize,
                                             return_dict=tokenize)
    except Exception as e:  # noqa: BLE001 - no template (ValueError), a broken Jinja template: one message
        raise InputError("a Qwen2.5 tokenizer with its chat template (tokenizer_config.json 'chat_template' or "
                         "chat_template.jinja)", f"{type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}",
                         "use the tokenizer that ships with Qwen2.5-VL, or ComfyUI's comfy/text_encoders/"
                         "qwen25_tokenizer") from None


def template_crop(tokenizer) -> int:
    """Tokens of the template before the user's text: its head, rendered by the tokenizer's chat template up
    to the last `<|im_start|>user\\n`, tokenized alone (108 with the real Qwen2.5 tokenizer)."""
    if tokenizer in _CROPS:
        return _CROPS[tokenizer]
    rendered = _render(tokenizer, _SENTINEL, tokenize=False)
    head = rendered[: rendered.find(_SENTINEL)] if _SENTINEL in rendered else ""
    if not head.endswith(USER_HEAD) or SYSTEM_MESSAGE not in head:
        raise InputError(f"a chat template that renders the system message, then {USER_HEAD!r} and the user's text "
                         "(Qwen2.5's ChatML)", f"{rendered[:160]!r}",
                         "use the tokenizer that ships with Qwen2.5-VL, or ComfyUI's comfy/text_encoders/qwen25_tokenizer")
    crop = len(tokenizer(head, add_special_tokens=False)["input_ids"])
    _CROPS[tokenizer] = crop
    return crop


def template_tokens(prompt: str, tokenizer, max_tokens: int = TEXT_TOKENS) -> TemplatedTokens:
    ids = list(_render(tokenizer, prompt, tokenize=True)["input_ids"])
    crop = template_crop(tokenizer)
    dropped = max(0, len(ids) - crop - max_tokens)
    if dropped:
        log.warning("HyStream: the prompt is %d tokens longer than the %d the text encoder reads; "
                    "the last %d tokens were dropped", dropped, max_tokens, dropped)
        ids = ids[: crop + max_tokens]
    return TemplatedTokens(ids, crop, dropped)


# -- the glyph text: what ByT5 reads --------------------------------------------------------------------------
GLYPH_PATTERN = re.compile(r"\"(.*?)\"|“(.*?)”")  # straight double quotes, or curly “…” (not ‘…’)


def glyph_text(prompt: str) -> str | None:
    """The quoted text of a prompt as the DiT's glyph branch expects it, `Text "A". Text "B". `, duplicates
    removed when there are several quotes (diffusers' extract_glyph_texts); None when nothing is quoted."""
    found = [double or curly for double, curly in GLYPH_PATTERN.findall(prompt)]
    if len(found) > 1:
        found = list(dict.fromkeys(found))
    return ". ".join(f'Text "{text}"' for text in found) + ". " if found else None


def glyph_tokens(prompt: str, tokenizer, max_tokens: int = GLYPH_TOKENS) -> list[int] | None:
    """ByT5's token ids for the prompt's quoted text (its end token included, truncated as the reference
    does), or None when nothing is quoted."""
    text = glyph_text(prompt)
    if text is None:
        return None
    ids = tokenizer(text, truncation=True, max_length=max_tokens, add_special_tokens=True)["input_ids"]
    whole = len(tokenizer(text, add_special_tokens=True)["input_ids"])
    if whole > len(ids):
        log.warning("HyStream: the quoted text is %d bytes longer than the %d the glyph encoder (ByT5) reads; "
                    "the last %d were dropped", whole - len(ids), max_tokens, whole - len(ids))
    return list(ids)


# -- the tokenizers -------------------------------------------------------------------------------------------
# Both folders hold a tokenizer_config.json (Qwen2.5's with tokenizer.json or vocab.json + merges.txt); a folder
# is taken only if its tokenizer_class is the right one, so one tokenizer_dir may be given for both, and another
# model's tokenizer beside the weights (HunyuanVideo 1.0's, in the same text_encoders folder) is passed over.
QWEN25_TOKENIZER = TokenizerKind("qwen25", "Qwen2.5", ("tokenizer_config.json",), ("tokenizer",),
                                 "comfy/text_encoders/qwen25_tokenizer")
BYT5_TOKENIZER = TokenizerKind("byt5", "ByT5", ("tokenizer_config.json",), ("tokenizer_2",),
                               "comfy/text_encoders/byt5_tokenizer")
_CLASSES = {"qwen25": ("Qwen2Tokenizer", "Qwen2"), "byt5": ("ByT5Tokenizer", "ByT5")}  # loaded as, accepted prefix


def _holds(kind: TokenizerKind, folder: str) -> bool:
    if not all(os.path.isfile(os.path.join(folder, f)) for f in kind.files):
        return False
    try:
        with open(os.path.join(folder, "tokenizer_config.json"), encoding="utf-8") as f:
            named = json.load(f).get("tokenizer_class") or ""
    except (OSError, ValueError, AttributeError):
        return True  # unreadable: taken, and loading it says what is wrong
    bpe = any(os.path.isfile(os.path.join(folder, f)) for f in ("tokenizer.json", "vocab.json"))
    if named:
        return str(named).startswith(_CLASSES[kind.key][1])
    return bpe == (kind.key == "qwen25")


def find_tokenizer(kind: TokenizerKind, weights_path: str, explicit: str | None = None, host_dir: str | None = None) -> str:
    """The folder of `kind`'s tokenizer: the tokenizer_dir given, then beside the weights (their folder, the
    kind's subfolders, a diffusers pipeline's sibling folders), then the host's bundled copy."""
    base = weights_path if os.path.isdir(weights_path) else os.path.dirname(os.path.abspath(weights_path))
    beside = [base] + [os.path.join(base, s) for s in kind.subfolders] + \
        [os.path.join(os.path.dirname(base), s) for s in kind.subfolders]
    places = ([("the tokenizer_dir you gave", explicit)] if explicit else []) + \
        [("beside the weights", d) for d in beside] + ([("bundled with ComfyUI", host_dir)] if host_dir else [])
    for _, folder in places:
        if _holds(kind, folder):
            return folder
    searched = "; ".join(f"{where}: {d}" for where, d in places)
    if not host_dir:
        searched += "; bundled with ComfyUI: (no ComfyUI host found)"
    raise NotFoundError(f"the {kind.name} tokenizer ({_CLASSES[kind.key][0]}: {', '.join(kind.files)})",
                        f"none in {searched}", f"put the {kind.name} tokenizer files beside the weights (in "
                        f"{kind.subfolders[0]}/), or give the folder that holds them as tokenizer_dir "
                        f"(ComfyUI ships it as {kind.bundled})")


def load_tokenizer(kind: TokenizerKind, weights_path: str, explicit: str | None = None, host_dir: str | None = None):
    """transformers' Qwen2Tokenizer (tokenizer.json, or vocab.json + merges.txt: the same byte-level BPE, its
    chat template from the folder) or ByT5Tokenizer, from the folder find_tokenizer picks."""
    import transformers

    folder = find_tokenizer(kind, weights_path, explicit, host_dir)
    try:
        tokenizer = getattr(transformers, _CLASSES[kind.key][0]).from_pretrained(folder, local_files_only=True)
        if kind.key == "qwen25" and tokenizer.convert_tokens_to_ids("<|im_start|>") is None:
            raise ValueError("no <|im_start|> token")
        return tokenizer
    except Exception as e:  # noqa: BLE001 - JSON, tokenizers' Rust errors, I/O: one message
        raise CorruptFileError(f"the {kind.name} tokenizer in a readable form",
                               f"{type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''} in {folder!r}",
                               "replace the tokenizer files with the ones that came with the model (or ComfyUI's "
                               "bundled copies), or name another folder as tokenizer_dir") from None
