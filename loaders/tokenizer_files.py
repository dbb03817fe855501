"""Find and load a model family's tokenizers without any hub access.

Where we look, in order: the folder the user named (`tokenizer_dir`), then beside the weights (the
weights' own folder, the kind's subfolders, and a diffusers pipeline's sibling folders), then the host's
bundled copy (ComfyUI ships most tokenizers under `comfy/`; the node layer passes the folders in). The
error names every place searched. Which tokenizers a family needs (TokenizerKind) is the family's to say.

A fast tokenizer is `tokenizer.json` (+ `tokenizer_config.json`), loaded as a plain
`PreTrainedTokenizerFast` (transformers 5's `LlamaTokenizerFast.from_pretrained` rebuilds a different
tokenizer); CLIP's is `vocab.json` + `merges.txt`.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass

from ..errors import CorruptFileError, NotFoundError


@dataclass(frozen=True)
class TokenizerKind:
    key: str  # the host_dirs key ("llama", "clip", …)
    name: str  # for people, e.g. "Llama-3"
    files: tuple[str, ...]  # what a folder must hold
    subfolders: tuple[str, ...]  # beside the weights (diffusers: tokenizer/, tokenizer_2/)
    bundled: str = ""  # where ComfyUI ships it, relative to its checkout ("" = it does not)


def bundled_tokenizer_dirs(comfyui_root: str, kinds) -> dict[str, str]:
    """The tokenizers ComfyUI ships beside its code (`comfy/` is a namespace package: locate it by the
    root of the checkout, i.e. the folder of `folder_paths.py`, never by the user-data base path)."""
    return {k.key: os.path.join(comfyui_root, *k.bundled.split("/")) for k in kinds if k.bundled}


def _beside(weights_path: str, subfolders: tuple[str, ...]) -> list[str]:
    base = weights_path if os.path.isdir(weights_path) else os.path.dirname(os.path.abspath(weights_path))
    dirs = [base] + [os.path.join(base, s) for s in subfolders]
    dirs += [os.path.join(os.path.dirname(base), s) for s in subfolders]  # diffusers: text_encoder/../tokenizer
    return dirs


def find_tokenizer(kind: TokenizerKind, weights_path: str, explicit: str | None = None, host_dirs=()) -> str:
    name, files, subfolders = kind.name, kind.files, kind.subfolders
    places = ([("the tokenizer_dir you gave", explicit)] if explicit else []) + \
        [("beside the weights", d) for d in _beside(weights_path, subfolders)] + \
        [("bundled with ComfyUI", d) for d in host_dirs if d]
    for _, d in places:
        if all(os.path.isfile(os.path.join(d, f)) for f in files):
            return d
    searched = "; ".join(f"{where}: {d}" for where, d in places)
    if not host_dirs:
        searched += "; bundled with ComfyUI: (no ComfyUI host found)"
    raise NotFoundError(f"the {name} tokenizer files ({', '.join(files)})", f"none in {searched}",
                        f"put {' and '.join(files)} beside the weights, or give the folder that holds them "
                        "as tokenizer_dir")


def _unreadable(name: str, folder: str, files, e: Exception) -> CorruptFileError:
    return CorruptFileError(f"the {name} tokenizer ({', '.join(files)}) in a readable form",
                            f"{type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''} in {folder!r}",
                            "replace the tokenizer files with the ones that came with the model (or ComfyUI's "
                            "bundled copies), or name another folder as tokenizer_dir")


def load_fast_tokenizer(folder: str, name: str = "fast"):
    """A `tokenizer.json` tokenizer (Llama-3's, Qwen2.5's), its special tokens from tokenizer_config.json."""
    from transformers import PreTrainedTokenizerFast

    specials = {}
    config = os.path.join(folder, "tokenizer_config.json")
    try:
        if os.path.isfile(config):
            with open(config, encoding="utf-8") as f:
                cfg = json.load(f)
            for key in ("bos_token", "eos_token", "pad_token", "unk_token"):
                value = cfg.get(key) if isinstance(cfg, dict) else None
                if isinstance(value, dict):
                    value = value.get("content")
                if isinstance(value, str):
                    specials[key] = value
        return PreTrainedTokenizerFast(tokenizer_file=os.path.join(folder, "tokenizer.json"), **specials)
    except Exception as e:  # noqa: BLE001 - JSON, tokenizers' Rust errors, I/O: one message
        raise _unreadable(name, folder, ("tokenizer.json", "tokenizer_config.json"), e) from None


def load_clip_tokenizer(folder: str):
    """CLIP's BPE tokenizer: vocab.json + merges.txt."""
    from transformers import CLIPTokenizer

    try:
        return CLIPTokenizer(os.path.join(folder, "vocab.json"), os.path.join(folder, "merges.txt"))
    except Exception as e:  # noqa: BLE001 - as above: whatever transformers raises, one message
        raise _unreadable("CLIP", folder, ("vocab.json", "merges.txt"), e) from None
