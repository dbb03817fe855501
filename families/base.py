"""What the engine asks of a model family, and the plain values a family answers with.

The engine (offload/, quant/, loaders/, vae/, sampling/, models/, pipeline, planner, nodes, CLI) never
imports a family package: it looks families up in the registry (families/__init__.py) and talks to them
through these types. A family is a package under families/ that builds one `Family`. This module imports
nothing of the engine, so every floor may use its types.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import ClassVar


@dataclass(frozen=True)
class CacheConstants:
    """A family's published step-cache calibrations.

    teacache_coefficients: TeaCache's rescaling polynomial for the family's first-block relative L1
        distance, highest power first (numpy.poly1d order); empty when none is published.
    mag_ratios: MagCache's per-step magnitude ratios, by the video height they were calibrated at
        ((720, (...)), (544, (...))); the run picks the closest height and resamples to its steps.
    """

    teacache_coefficients: tuple[float, ...] = ()
    mag_ratios: tuple[tuple[int, tuple[float, ...]], ...] = ()
    family: str = "this model family"  # the family's title, for the messages

    def mag_ratios_for(self, height: int) -> tuple[float, ...] | None:
        """The calibration closest to `height` (ties go to the taller one), or None when none is published."""
        if not self.mag_ratios:
            return None
        return min(self.mag_ratios, key=lambda hr: (abs(hr[0] - height), -hr[0]))[1]


@dataclass(frozen=True)
class LatentFormat:
    """A family's VAE latent space, as ComfyUI's LATENT carries it (raw VAE latents)."""

    channels: int  # latent channels (16, 32)
    space: int  # pixels per latent cell (8, 16)
    time: int  # video frames per latent frame after the first (4)
    scaling: float  # raw latent × scaling = what the DiT sees
    side_multiple: int  # width and height must be multiples of this (the VAE's cell × the DiT's patch)
    preview: str = ""  # the host's latent format class for Latent2RGB previews ("" = none)

    def latent_frames(self, frames: int) -> int:
        return (frames - 1) // self.time + 1

    def video_frames(self, latent_frames: int) -> int:
        return (latent_frames - 1) * self.time + 1

    def shape(self, width: int, height: int, frames: int, batch: int = 1) -> tuple[int, ...]:
        return (batch, self.channels, self.latent_frames(frames), height // self.space, width // self.space)


@dataclass(frozen=True)
class SamplerDefaults:
    """What the sampler node and the CLI start from for a family's DiT (a variant may differ)."""

    steps: int
    flow_shift: float
    embedded_guidance: float | None  # guidance-distilled DiTs; None: the family has no guidance input
    cfg: float  # true CFG scale (1 = no negative pass)


class StreamedSpec(ABC):
    """How a family's streamed model (a DiT, a text encoder's decoder layers) is read from a file and built:
    loaders/streamed.py runs the one loading sequence with it (layout → config → skeleton → checks →
    dtypes → block sources → streamer)."""

    what: str  # in "expected …" messages, e.g. "a HunyuanVideo DiT"
    label: str  # in budget errors, e.g. "the DiT"
    fp16_ok: bool = True  # may `auto` compute in fp16 (where bf16 is missing)?
    gguf_dtype: str = "bfloat16"  # what a GGUF file's quantised weights compute like

    @abstractmethod
    def layout(self, source):
        """The file's key layout: loaders.recipes.KeyLayout (our name → recipe, unused keys, layout name)."""

    @abstractmethod
    def config(self, shapes: dict, source):
        """The model's hyper-parameters from tensor shapes (our names); raises for variants it cannot run."""

    @abstractmethod
    def build(self, cfg, device):
        """The model skeleton on the meta device; `.blocks` lists the streamed blocks in the order they run."""

    @abstractmethod
    def block_of(self, cfg, name: str) -> tuple[int, str] | None:
        """(streamed block index, name inside the block), or None for a fixed (non-block) tensor."""

    def keep(self, cfg, name: str) -> bool:
        """Whether the model uses this tensor (a text encoder may stop before its last layers)."""
        return True

    def expected(self, model, cfg) -> dict[str, tuple[int, ...]]:
        """Every tensor the file must hold, with its shape."""
        return {n: tuple(p.shape) for n, p in model.named_parameters()}

    def quantisable(self, name: str, shape: tuple) -> bool:
        """Whether a block tensor may be stored quantised (weight_dtype fp8): the blocks' Linear weights."""
        return name.endswith(".weight") and len(shape) == 2

    def reads_fixed(self, name: str) -> bool:
        """Whether a fixed tensor goes to the device whole (a text encoder's embedding table is read by rows)."""
        return True


class TextStack(ABC):
    """A loaded text stack (what a family's load_text_encoder returns): prompts in, the family's native
    CONDITIONING out; its language model's layers stream through `streamer`."""

    streamer: object  # offload.streamer.BlockStreamer
    # may a prompt be empty? (families whose references encode "" as the default negative prompt)
    empty_prompt_ok: ClassVar[bool] = False

    @abstractmethod
    def conditioning(self, prompt: str) -> list:
        """The prompt as the family's native CONDITIONING (NaN-checked, cached per prompt and files)."""

    def image_conditioning(self, vision_path: str, image, prompt: str, interleave: int) -> list:
        """A prompt carrying the start image's tokens (families whose prompts see the image)."""
        from ..errors import InputError

        raise InputError("a text encoder whose prompts take an image",
                         f"{type(self).__name__}", "use the plain text encode node for this model family")

    @abstractmethod
    def device_bytes(self) -> int:
        """What a stage holds on the device besides the streamed layers (small encoders kept whole)."""

    @abstractmethod
    def to_device(self) -> None: ...

    @abstractmethod
    def release_device(self) -> None: ...

    @abstractmethod
    def close(self) -> None: ...


class Family(ABC):
    """One model family: its files, its maths, its sampler, its memory model. See docs/DESIGN.md, "Adding a model family"."""

    name: str  # registry key, e.g. "hunyuan_video"
    title: str  # for people, e.g. "HunyuanVideo 1.0"
    # the files users pick for each role, for node tooltips and messages: dit, llm, second_text, vae, vision
    files: ClassVar[dict[str, str]] = {}
    tokenizers: tuple = ()  # loaders.tokenizer_files.TokenizerKind: what its text stack reads
    latent: LatentFormat
    caches: CacheConstants
    defaults: SamplerDefaults

    # -- files -----------------------------------------------------------------------------------------
    @abstractmethod
    def claims_dit(self, keys: set[str]) -> bool:
        """Whether a checkpoint with these keys is this family's DiT (any layout, any prefix)."""

    @abstractmethod
    def dit_spec(self, keys: set[str]) -> StreamedSpec:
        """The spec for loading this family's DiT from a file with these keys."""

    @abstractmethod
    def claims_text_encoder(self, keys: set[str]) -> bool:
        """Whether a checkpoint with these keys is this family's (first) text encoder."""

    @abstractmethod
    def load_text_encoder(self, first: str, second: str, device, **options):
        """The family's text stack from its two files; a handle with `encode(prompt) → CONDITIONING`."""

    @abstractmethod
    def claims_vae(self, keys: set[str], shapes) -> bool:
        """Whether a checkpoint is this family's VAE (`shapes(key)` reads a tensor's shape)."""

    @abstractmethod
    def load_vae(self, source, path: str, device, dtype=None):
        """The VAE, whole on the host, from an open checkpoint; a loaders.vae_loader.LoadedVAE."""

    # -- sampling --------------------------------------------------------------------------------------
    @abstractmethod
    def denoiser(self, dit, positive, negative, latent, settings):
        """What one sampling run asks the DiT: a sampling.denoiser.Denoiser over the run's conditioning."""

    def dropped_frames(self, dit) -> int:
        """Decoded frames the family's reference drops after sampling with this DiT (0: none)."""
        return 0

    def attach_start_image(self, conditioning, image_latent, frames: int, vision_states=None):
        """CONDITIONING with a start image attached as the host's image-to-video node does (`vision_states`: what
        `start_image_states` gave, for families whose DiT takes the image's vision states)."""
        raise NotImplementedError(f"{self.title} has no image-to-video")

    def sampler_preset(self, dit_name: str, dit_cfg) -> tuple[str, SamplerDefaults]:
        """(the variant's name, its sampler settings) for a DiT file: the family's defaults unless it has presets."""
        return "", self.defaults

    # the negative prompt the family's reference encodes when none is given and cfg > 1 (None: it needs one)
    default_negative: ClassVar[str | None] = None

    def fit_start_image(self, image, width: int, height: int):
        """The start IMAGE as the family's reference gives it to the VAE: [1, height, width, 3] in [0, 1]
        (None: the engine's centre crop and antialiased resize, video_stages.fit_image)."""
        return

    def samples_sections(self, dit_cfg) -> bool:
        """Whether a DiT of this config samples long videos section by section (section_sampler)."""
        return False

    def section_sampler(self, dit):
        """The sampling.long_video.SectionSampler for a DiT that samples long videos section by section; refused
        for one that does not."""
        raise self.not_sectioned(type(dit.model).__name__)

    def not_sectioned(self, what: str):
        from ..errors import InputError

        return InputError("a DiT trained to sample long videos section by section (FramePack, FramePack-F1)",
                         f"{self.title}'s {what}",
                         "load a FramePack DiT (FramePackI2V_HY), or use HyStreamSampler for this one")

    def start_image_states(self, vision_path: str, image, width: int, height: int, device="cpu"):
        """The start image's vision states for the DiT (None: this family's DiT takes none beside the latent)."""
        return

    def image_prompt(self, dit_cfg, text_encoder_path: str, vision_path: str | None, interleave: int):
        """(vision tower file, image interleave) when this DiT's prompts carry the start image's tokens (the
        CLI's --image), else (None, 0): the image enters elsewhere, or not at all."""
        return None, 0

    # -- memory (the planner) ------------------------------------------------------------------------------
    @abstractmethod
    def memory(self):
        """The family's memory model: planner.MemoryModel answers per stage at real sizes."""

    # -- demo --------------------------------------------------------------------------------------------
    @abstractmethod
    def write_demo_models(self, root: str) -> dict[str, str]:
        """Tiny random models in the real file layouts (the demo, the host tests); paths by role."""

    @abstractmethod
    def smoke_model(self, folder: str, width: int, height: int, seed: int):
        """(a tiny random DiT file, the keyword inputs of one forward at this size): the CLI's smoke test."""
