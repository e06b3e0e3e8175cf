"""Helpers for families whose processor is a subclass of the standard one (built without
torchvision or optional packages): saved folders name the standard class, and loading reports a
folder without processor files in one line."""

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


def load_processor_of(processor_class, path: str, family: str):
    """`processor_class.from_pretrained(path)`, or one clear error naming what the folder lacks."""
    try:
        return processor_class.from_pretrained(path)
    except (OSError, ValueError, TypeError) as exc:
        raise RuntimeError(
            f"{path}: no {family} processor could be loaded ({str(exc).splitlines()[0]}). A model folder "
            "needs its processor files: save them with processor.save_pretrained(folder)."
        ) from exc
