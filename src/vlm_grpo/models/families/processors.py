"""Helpers for families whose processor is a subclass of the standard one (built without
torchvision or optional packages): saved folders name the standard class, image-only subclasses
of the processors that insist on a video processor, and loading that reports a folder without
processor files in one line."""

from __future__ import annotations


class SavedAsStandard:
    """Mixin: a folder this processor saves names the standard processor class, so other tools
    (and AutoProcessor where it works) load it as a standard one."""

    standard_name: str = ""
    """The standard processor class this one extends."""

    def to_dict(self) -> dict:
        out = super().to_dict()
        out["processor_class"] = self.standard_name
        return out


class ImageOnly(SavedAsStandard):
    """Mixin, before a standard processor whose constructor is (image_processor, tokenizer,
    video_processor, chat_template=..., **kwargs): the processor without its video processor, which
    builds without torchvision and loads folders the standard one saved (ignoring their video
    settings: videos cannot be given to it)."""

    # No `video_processor` argument: ProcessorMixin derives its sub-processors from this signature.
    def __init__(self, image_processor=None, tokenizer=None, chat_template=None, **kwargs):
        super().__init__(image_processor, tokenizer, None, chat_template=chat_template, **kwargs)


def torchvision_available() -> bool:
    try:
        import torchvision  # noqa: F401  (importable is all we ask)
    except Exception:  # a CUDA-only build fails with RuntimeError, not ImportError
        return False
    return True


def load_processor_of(processor_class, path: str, family: str):
    """`processor_class.from_pretrained(path)`, or one clear error naming what the folder lacks."""
    try:
        return processor_class.from_pretrained(path)
    except (OSError, ValueError, TypeError) as exc:
        raise RuntimeError(
            f"{path}: no processor could be loaded for the {family} family ({str(exc).splitlines()[0]}). A model "
            "folder needs its processor files (processor or preprocessor config, tokenizer, chat template): save "
            "them with processor.save_pretrained(folder) or copy them from the base model."
        ) from exc
