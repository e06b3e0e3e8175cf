"""The model card (README.md) every checkpoint folder holds, and pushing the final one to the hub.

A checkpoint copied off the machine, or uploaded, should say what it is without the run folder next
to it: the base model, the task and prompt style it answers in, what it was rewarded for, how
guidance and supervised terms were set, the held-out results it had, the whole configuration, and
how to train it again. The hub reads the YAML front matter (library, pipeline, base model, tags).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import yaml
from tqdm.auto import tqdm

from ..config import TrainConfig


def model_card(cfg: TrainConfig, step: int, config_yaml: str, results: dict, reproduce: str | None) -> str:
    """The README.md of checkpoint-<step>; `results` are the newest held-out metrics (may be empty)."""
    front = {"library_name": "transformers", "pipeline_tag": "image-text-to-text", "tags": ["vlm-grpo", "grpo"]}
    if _hub_id(cfg.model):  # the hub links a fine-tune to its base only by a hub id
        front["base_model"] = cfg.model
    weights = cfg.reward_weights or [1.0] * len(cfg.reward_funcs)
    rows = {
        "base model": f"`{cfg.model}`",
        "task": f"`{cfg.task}`" + (f" ({_pairs(cfg.task_options)})" if cfg.task_options else ""),
        "prompt style": f"`{cfg.prompt.style}`",
        "reward functions": ", ".join(f"`{name}` x {w:g}" for name, w in zip(cfg.reward_funcs, weights)),
        "training data": f"`{cfg.data.train}`",
        "guidance injection": _fields(cfg.injection) if cfg.injection.mode != "none" else "off",
        "supervised signal": _fields(cfg.sft) if cfg.sft.active or cfg.sft.warmup_steps else "off",
        "LoRA": _fields(cfg.lora) if cfg.lora.enabled else "off",
        "steps": f"{step} of {cfg.max_steps}",
    }
    # A run set for video rows says how it saw them: the settings it changed from their defaults.
    video = {f.name: getattr(cfg.video, f.name) for f in dataclasses.fields(cfg.video)}
    video = {name: value for name, value in video.items() if value != getattr(type(cfg.video)(), name)}
    if video:
        rows["video frames"] = _pairs(video) + " (others: the processor's)"
        front["tags"].append("video")
    lines = ["---", yaml.safe_dump(front, sort_keys=False).strip(), "---", ""]
    lines += [f"# {Path(cfg.output_dir).name} checkpoint-{step}", ""]
    lines += [f"`{cfg.model}` trained with GRPO by [vlm-grpo](https://pypi.org/project/vlm-grpo/).", ""]
    lines += ["| | |", "|---|---|", *(f"| {key} | {value} |" for key, value in rows.items()), ""]
    lines += ["## Held-out results", "", *_results(results), ""]
    lines += ["## Reproduce", "", reproduce or _command(), ""]
    lines += ["## Training configuration", "", "```yaml", config_yaml.rstrip(), "```", ""]
    return "\n".join(lines)


def _results(results: dict) -> list[str]:
    if not results:
        return ["No held-out set was evaluated during the run (set `data.eval` to evaluate one)."]
    table = ["The newest evaluation before this checkpoint:", "", "| metric | value |", "|---|---|"]
    return table + [f"| {key} | {value:.4f} |" for key, value in sorted(results.items())]


def _command() -> str:
    intro = "From this folder, whose `config.yaml` is the run's whole configuration:"
    return f"{intro}\n\n```bash\nvlm-grpo train config.yaml\n```"


def _pairs(values: dict[str, Any]) -> str:
    return ", ".join(f"{key}={value}" for key, value in values.items())


def _fields(section: Any) -> str:
    """A section's fields as key=value, a schedule as its one-line description."""
    return _pairs({f.name: getattr(section, f.name) for f in dataclasses.fields(section)})


def _hub_id(name: str) -> bool:
    return name.count("/") == 1 and not name.startswith((".", "/")) and not Path(name).exists()


def push_to_hub(folder: Path, cfg: TrainConfig) -> str | None:
    """Upload checkpoint `folder` (without the optimizer state) to `cfg.hub_model_id`; the repository's
    URL, or None after one line saying why not. Never raises: the run and its checkpoint are already
    complete, and an unreachable hub or a missing token must not turn them into a failure."""
    repo_id = cfg.hub_model_id or Path(cfg.output_dir).resolve().name
    try:
        from huggingface_hub import HfApi

        api = HfApi()
        url = api.create_repo(repo_id, repo_type="model", exist_ok=True)
        api.upload_folder(
            repo_id=url.repo_id,
            folder_path=folder,
            commit_message=f"vlm-grpo {folder.name}",
            ignore_patterns=["trainer_state.pt"],  # optimizer and RNG state: for resuming here, not for users
        )
    except Exception as exc:  # offline, no token, no permission, a network fault: all end the same way
        reason = "could not reach the hub" if isinstance(exc, (ConnectionError, TimeoutError)) else "upload failed"
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        tqdm.write(f"push_to_hub: {reason} ({detail}); the checkpoint is in {folder}")
        return None
    tqdm.write(f"push_to_hub: {folder} uploaded to {url}")
    return str(url)
