"""Checkpoints: `checkpoint-<step>/` holds the model and processor in HF format (safetensors),
`trainer_state.pt` (optimizer, scheduler, RNG and data-stream state), the run's `config.yaml` and a
model card (`README.md`), written to a temporary folder and renamed into place, so a half-written
checkpoint is never picked up. With `push_to_hub`, the final one is uploaded."""

from __future__ import annotations

import os
import random
import re
import shutil
from pathlib import Path

import torch
import yaml
from tqdm.auto import tqdm

from ..config import to_dict
from ..models import save_model
from ..seeding import restore_python_rng
from .distributed.fsdp import plain_classes
from .model_card import model_card, push_to_hub
from .run_state import Progress, RunState

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


def save(
    output_dir: Path,
    step: int,
    model,
    processor,
    state: dict,
    config_yaml: str,
    limit: int | None,
    merged: bool = True,
    state_dict: dict | None = None,
    card: str | None = None,
) -> Path:
    """Write checkpoint-<step> through its staging folder, keeping what other ranks staged there
    (the caller clears it first); `state_dict` gives the full weights of a sharded model, `card` the
    README.md."""
    final = output_dir / f"checkpoint-{step}"
    tmp = staging_dir(output_dir, step)
    try:
        with plain_classes(model):  # transformers finds key renamings by class name
            save_model(model, tmp, merged, state_dict)
        processor.save_pretrained(tmp)
        torch.save(state, tmp / "trainer_state.pt")
        (tmp / "config.yaml").write_text(config_yaml)
        if card is not None:
            (tmp / "README.md").write_text(card)
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


def save_run(run: RunState, progress: Progress, last_eval: dict) -> Path | None:
    """checkpoint-<step> of a training run: weights, processor and the run's whole state; `last_eval`,
    the newest held-out results, go into the model card. Collective; the path on rank 0."""
    # Collectives first: every rank's RNG, sharded weights and optimizer state gathered or written.
    world, strategy, step = run.world, run.strategy, progress.step
    rngs = world.gather(rng_state())
    weights, optimizer = strategy.checkpoint_payload(run.model, run.optimizer)
    staging = staging_dir(run.out, step)
    if world.is_main:
        clear(staging)
    world.barrier()
    strategy.save_extra(staging)
    if not world.is_main:
        world.barrier()
        return None
    state = {
        "step": step,
        "optimizer": optimizer,
        "scheduler": run.scheduler.state_dict(),
        "rng": rngs[0],
        "rng_per_rank": rngs,
        "stream": run.stream.state_dict(),
        "remedies": {remedy.name: remedy.state_dict() for remedy in run.remedies},
        "skipped_updates": progress.skipped_updates,
    }
    cfg = run.cfg
    try:
        config_yaml = yaml.safe_dump(to_dict(cfg), sort_keys=False)
        card = model_card(cfg, step, config_yaml, last_eval, run.reproduce)
        path = save(
            run.out,
            step,
            run.model,
            run.processor,
            state,
            config_yaml,
            cfg.save_total_limit,
            merged=cfg.lora.save_merged,
            state_dict=weights,
            card=card,
        )
    finally:
        world.barrier()
    if cfg.push_to_hub and step == cfg.max_steps:  # after the barrier: other ranks need not wait for an upload
        push_to_hub(path, cfg)
    return path


def resume_run(run: RunState) -> Progress:
    """Put the newest checkpoint's state into the run's objects; returns how far it had come (step 0
    when there is none)."""
    path = latest(run.out)
    if path is None:
        tqdm.write(f"resume=true but {run.out} holds no complete checkpoint: starting from step 0")
        return Progress(0)
    state = load_state(path)
    run.strategy.restore(run.model, run.optimizer, path, state)
    run.scheduler.load_state_dict(state["scheduler"])
    run.stream.load_state_dict(state["stream"])
    for remedy in run.remedies:
        if remedy.name not in state["remedies"]:
            raise ValueError(f"{path} was saved by a run without remedy {remedy.name!r}: resume with its config")
        remedy.load_state_dict(state["remedies"][remedy.name])
    world, per_rank = run.world, state.get("rng_per_rank", [])
    if len(per_rank) == world.size:
        restore_rng(per_rank[world.rank])
    else:  # saved by another number of processes: rank 0's RNG, the others reseeded from the step
        restore_rng(state["rng"])
        if world.rank:
            torch.manual_seed(run.cfg.seed + 7919 * world.rank + int(state["step"]))
    tqdm.write(f"resumed from {path}")
    return Progress(int(state["step"]), state["skipped_updates"])
