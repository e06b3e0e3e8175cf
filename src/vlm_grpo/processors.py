"""Processors that work with and without torchvision.

In transformers 5.x the Qwen2-VL processors also build a video processor, which needs
torchvision; without it `AutoProcessor` silently returns only the tokenizer. The image-only
subclasses below leave the video processor out and load folders saved by the standard ones.
"""

from __future__ import annotations

from transformers.models.qwen2_5_vl.processing_qwen2_5_vl import Qwen2_5_VLProcessor
from transformers.models.qwen2_vl.processing_qwen2_vl import Qwen2VLProcessor


class ImageOnlyQwen2VLProcessor(Qwen2VLProcessor):
    # No `video_processor` argument: ProcessorMixin derives its sub-processors from this signature.
    def __init__(self, image_processor=None, tokenizer=None, chat_template=None, **kwargs):
        super().__init__(image_processor, tokenizer, None, chat_template=chat_template, **kwargs)


class ImageOnlyQwen2_5_VLProcessor(Qwen2_5_VLProcessor):
    def __init__(self, image_processor=None, tokenizer=None, chat_template=None, **kwargs):
        super().__init__(image_processor, tokenizer, None, chat_template=chat_template, **kwargs)


FAMILY_PROCESSORS = {
    "qwen2-vl": (Qwen2VLProcessor, ImageOnlyQwen2VLProcessor),
    "qwen2.5-vl": (Qwen2_5_VLProcessor, ImageOnlyQwen2_5_VLProcessor),
}
MODEL_TYPE_FAMILY = {"qwen2_vl": "qwen2-vl", "qwen2_5_vl": "qwen2.5-vl"}


def torchvision_available() -> bool:
    try:
        import torchvision  # noqa: F401  (importable is all we ask)
    except Exception:  # a CUDA-only build fails with RuntimeError, not ImportError
        return False
    return True


def make_processor(family: str, image_processor, tokenizer, chat_template: str | None):
    standard, image_only = FAMILY_PROCESSORS[family]
    if torchvision_available():
        try:
            return standard(image_processor=image_processor, tokenizer=tokenizer, chat_template=chat_template)
        except (TypeError, ValueError, AttributeError):
            pass
    return image_only(image_processor=image_processor, tokenizer=tokenizer, chat_template=chat_template)


def load_processor(path: str, model_type: str, trust_remote_code: bool = False):
    """AutoProcessor when it yields a real multimodal processor; the image-only class otherwise."""
    from transformers import AutoProcessor

    try:
        processor = AutoProcessor.from_pretrained(path, trust_remote_code=trust_remote_code)
    except Exception as exc:  # torchvision missing surfaces as several exception types
        processor, error = None, exc
    else:
        error = None
    if processor is not None and hasattr(processor, "image_processor"):
        return processor
    family = MODEL_TYPE_FAMILY.get(model_type)
    if family is None:
        raise RuntimeError(
            f"{path}: AutoProcessor did not give an image processor for model type {model_type!r}"
            + (f" ({error})" if error else "")
            + ". Install torchvision, or save a complete processor (processor_config.json) with the model."
        )
    try:
        return FAMILY_PROCESSORS[family][1].from_pretrained(path)
    except (OSError, ValueError) as exc:
        raise RuntimeError(
            f"{path}: no processor could be loaded ({str(exc).splitlines()[0]}). A model folder needs its processor "
            "files (preprocessor/processor_config.json, tokenizer.json, chat template): save them with "
            "processor.save_pretrained(folder) or copy them from the base model."
        ) from exc


def fit_to_pixel_budget(image, image_processor):
    """The image resized once to the size the Qwen2-VL image processor would give it, with its
    resampling, so the processor's own resize becomes a no-op on every later use."""
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import smart_resize

    size = getattr(image_processor, "size", None) or {}
    factor = getattr(image_processor, "patch_size", 14) * getattr(image_processor, "merge_size", 2)
    height, width = smart_resize(image.height, image.width, factor=factor,
                                 min_pixels=size.get("shortest_edge", 56 * 56), max_pixels=size.get("longest_edge", 28 * 28 * 1280))
    if (height, width) == (image.height, image.width):
        return image
    return image.resize((width, height), resample=int(getattr(image_processor, "resample", 3)))
