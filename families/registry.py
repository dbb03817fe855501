"""The registry of model families: the engine finds a file's family here, never by importing a family's
package. Adding a family: one package under families/ and one line in FAMILIES (the more specific family
first: a file goes to the first family that claims it — HunyuanVideo 1.5's DiT also has 1.0's token
refiner, so 1.5 is asked first)."""

from __future__ import annotations

from ..errors import WrongModelError
from .base import Family
from .hunyuan_video import FAMILY as HUNYUAN_VIDEO
from .hunyuan_video_15 import FAMILY as HUNYUAN_VIDEO_15

FAMILIES: tuple[Family, ...] = (HUNYUAN_VIDEO_15, HUNYUAN_VIDEO)


def default() -> Family:
    """The family of inputs that name none (the first one HyStream ran; native ComfyUI's default too)."""
    return HUNYUAN_VIDEO


def named(name: str) -> Family:
    for family in FAMILIES:
        if family.name == name:
            return family
    raise KeyError(f"no model family {name!r}; known: {', '.join(f.name for f in FAMILIES)}")


def lookup(text: str) -> Family:
    """A family by its name as people type it: hunyuan_video_15, hunyuanvideo15, "HunyuanVideo 1.5", 1.5 …"""
    def key(s: str) -> str:
        return "".join(ch for ch in s.lower() if ch.isalnum())

    wanted = key(text)
    for family in FAMILIES:
        version = family.title.rsplit(" ", 1)[-1]
        if wanted in (key(family.name), key(family.title), key(version)) or \
                (wanted == key(family.title.rsplit(" ", 1)[0]) and family is default()):
            return family
    raise KeyError(f"no model family {text!r}; known: {', '.join(f'{f.name} ({f.title})' for f in FAMILIES)}")


def by_title() -> list[Family]:
    """The families in the order people read them (by title: 1.0 before 1.5)."""
    return sorted(FAMILIES, key=lambda f: f.title)


def titles() -> str:
    return " or ".join(f.title for f in by_title())


def _first(claims, what: str, role: str, describe: str, keys, fix: str) -> Family:
    for family in FAMILIES:
        if claims(family):
            return family
    if len(FAMILIES) == 1:
        return FAMILIES[0]  # its own loader refuses the file with the most specific message
    from ..loaders.model_kind import describe_model

    raise WrongModelError(f"{what} ({file_examples(role)})", f"{describe_model(keys)} in {describe}", fix)


def for_dit(source) -> Family:
    keys = set(source.keys())
    return _first(lambda f: f.claims_dit(keys), "a HunyuanVideo transformer (DiT)", "dit", source.describe, keys,
                  "pick the DiT file from models/diffusion_models")


def for_text_encoder(source) -> Family:
    keys = set(source.keys())
    return _first(lambda f: f.claims_text_encoder(keys), "a text encoder", "llm", source.describe, keys,
                  "pick the family's language-model file from models/text_encoders")


def for_vae(source) -> Family:
    keys = set(source.keys())
    return _first(lambda f: f.claims_vae(keys, lambda k: source.info(k).shape), "a video VAE", "vae", source.describe, keys,
                  "pick the VAE file from models/vae")


def file_examples(role: str) -> str:
    """'HunyuanVideo 1.0: … ; HunyuanVideo 1.5: …' for a file role (dit, llm, second_text, vae, vision)."""
    return "; ".join(f"{f.title}: {f.files[role]}" for f in by_title() if role in f.files)


def bundled_tokenizer_dirs(comfyui_root: str) -> dict[str, str]:
    """Where a ComfyUI checkout ships each tokenizer any family reads, by TokenizerKind key."""
    from ..loaders.tokenizer_files import bundled_tokenizer_dirs as bundled

    return bundled(comfyui_root, [k for f in FAMILIES for k in f.tokenizers])
