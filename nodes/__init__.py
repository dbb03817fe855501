"""Thin ComfyUI node classes, one file per stage; the maths lives below them."""

from .host import HOST_AVAILABLE

NODE_CLASS_MAPPINGS: dict = {}
NODE_DISPLAY_NAME_MAPPINGS: dict = {}

if HOST_AVAILABLE:
    from .framepack import HyStreamFramePackSampler
    from .image_to_video import HyStreamImageToVideo
    from .latent_nodes import HyStreamEmptyLatentVideo
    from .loader_nodes import HyStreamDiTLoader, HyStreamLoRA, HyStreamTextEncoderLoader, HyStreamVAELoader
    from .sampler import HyStreamSampler
    from .step_cache import HyStreamStepCache
    from .text_encode import HyStreamTextEncode, HyStreamTextEncodeImage
    from .vae_nodes import HyStreamVAEDecode, HyStreamVAEEncode
    from .video_nodes import HyStreamLoadVideo, HyStreamSaveVideo

    _NODES = {
        HyStreamDiTLoader: "HyStream DiT Loader", HyStreamTextEncoderLoader: "HyStream Text Encoder Loader",
        HyStreamVAELoader: "HyStream VAE Loader", HyStreamTextEncode: "HyStream Text Encode",
        HyStreamLoRA: "HyStream LoRA", HyStreamStepCache: "HyStream Step Cache", HyStreamSampler: "HyStream Sampler", HyStreamVAEDecode: "HyStream VAE Decode",
        HyStreamVAEEncode: "HyStream VAE Encode", HyStreamSaveVideo: "HyStream Save Video",
        HyStreamLoadVideo: "HyStream Load Video", HyStreamImageToVideo: "HyStream Image To Video",
        HyStreamTextEncodeImage: "HyStream Text Encode (Image)", HyStreamEmptyLatentVideo: "HyStream Empty Latent Video",
        HyStreamFramePackSampler: "HyStream FramePack Sampler",
    }
    NODE_CLASS_MAPPINGS = {cls.__name__: cls for cls in _NODES}
    NODE_DISPLAY_NAME_MAPPINGS = {cls.__name__: name for cls, name in _NODES.items()}
