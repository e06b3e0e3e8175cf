"""Checkpoints: `checkpoint-<step>/` holds the model and processor in HF format (safetensors) and
`trainer_state.pt` (optimizer, scheduler, RNG and data-stream state), written to a temporary
folder and renamed into place, so a half-written checkpoint is never picked up."""

from __future__ import annotations

import os
import random
import re
import shutil
from pathlib import Path

import torch

from ..models import save_model
from ..seeding import restore_python_rng
from .distributed.fsdp import plain_classes

_NAME = re.compile(r"^checkpoint-(\d+)$")


def checkpoints(output_dir: Path) -> list[tuple[int, Path]]:
    """Complete checkpoints, oldest first."""
    if not output_dir.is_dir():
        return []
    found = []
    for child in output_dir.iterdir():
        match = _NAME.match(child.name)
        if match and (child / "trainer_state.pt").is_file():
            found.append((int(match.group(1)), child))
    return sorted(found)


def latest(output_dir: Path) -> Path | None:
    found = checkpoints(output_dir)
    return found[-1][1] if found else None


def staging_dir(output_dir: Path, step: int) -> Path:
    """Where checkpoint-<step> is written before it is renamed into place."""
    return output_dir / f".checkpoint-{step}.tmp"


def clear(folder: Path) -> None:
    shutil.rmtree(folder, ignore_errors=True)


def save(output_dir: Path, step: int, model, processor, state: dict, config_yaml: str, limit: int | None,
         merged: bool = True, state_dict: dict | None = None) -> Path:
    """Write checkpoint-<step> through its staging folder, keeping what other ranks staged there
    (the caller clears it first); `state_dict` gives the full weights of a sharded model."""
    final = output_dir / f"checkpoint-{step}"
    tmp = staging_dir(output_dir, step)
    try:
        with plain_classes(model):  # transformers finds key renamings by class name
            save_model(model, tmp, merged, state_dict)
        processor.save_pretrained(tmp)
        torch.save(state, tmp / "trainer_state.pt")
        (tmp / "config.yaml").write_text(config_yaml)
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
    except OSError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise RuntimeError(
            f"could not write checkpoint {final} ({exc}); the previous checkpoint is intact. "
            "Free disk space and resume with resume=true."
        ) from exc
    if limit is not None:
        for _, old in checkpoints(output_dir)[:-limit]:
            shutil.rmtree(old, ignore_errors=True)
    return final


def load_state(path: Path) -> dict:
    return torch.load(path / "trainer_state.pt", weights_only=True, map_location="cpu")


def rng_state() -> dict:
    state = {"python": random.getstate(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict) -> None:
    restore_python_rng(None, state["python"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
