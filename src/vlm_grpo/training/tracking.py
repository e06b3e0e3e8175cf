"""Metric sinks: metrics.jsonl (always), TensorBoard (default), Weights & Biases (when asked)."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path


class Tracker:
    def __init__(self, output_dir: Path, report_to: list[str], config: dict, resume_step: int | None = None):
        self.dir = output_dir
        self.metrics_path = output_dir / "metrics.jsonl"
        self.completions_path = output_dir / "completions.jsonl"
        if resume_step is not None:
            # Lines written after the checkpoint we resume from would be written again: drop them.
            for path in (self.metrics_path, self.completions_path):
                _truncate_after(path, resume_step)
        elif self.metrics_path.exists():
            self.metrics_path.unlink()
            self.completions_path.unlink(missing_ok=True)
        self._tb = self._wandb = None
        if "tensorboard" in report_to:
            from torch.utils.tensorboard import SummaryWriter

            self._tb = SummaryWriter(log_dir=str(output_dir / "tensorboard"))
        if "wandb" in report_to:
            try:
                import wandb
            except ImportError as exc:
                raise RuntimeError("report_to=[wandb] needs wandb: pip install 'vlm-grpo[wandb]'") from exc

            # W&B's own variables win, as under transformers' Trainer: WANDB_PROJECT names the
            # project, WANDB_DIR the folder its files go to (default: the run's output folder).
            self._wandb = wandb.init(
                project=os.environ.get("WANDB_PROJECT", "vlm-grpo"),
                dir=os.environ.get("WANDB_DIR", str(output_dir)),
                name=output_dir.name,
                config=config,
                resume="allow",
            )

    def log(self, step: int, metrics: dict) -> None:
        record = {"step": step, **{k: _clean(v) for k, v in metrics.items()}}
        with self.metrics_path.open("a") as f:
            f.write(json.dumps(record) + "\n")
        numeric = {k: v for k, v in record.items() if isinstance(v, (int, float)) and k != "step" and v is not None}
        if self._tb is not None:
            for key, value in numeric.items():
                self._tb.add_scalar(key, value, step)
            self._tb.flush()
        if self._wandb is not None:
            self._wandb.log(numeric, step=step)

    def log_completions(self, step: int, rows: list[dict]) -> None:
        with self.completions_path.open("a") as f:
            for row in rows:
                f.write(json.dumps({"step": step, **row}) + "\n")

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()
        if self._wandb is not None:
            self._wandb.finish()


def _clean(value):
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _truncate_after(path: Path, step: int) -> None:
    if not path.exists():
        return
    kept = [line for line in path.read_text().splitlines() if line.strip() and _step_of(line) <= step]
    path.write_text("".join(line + "\n" for line in kept))


def _step_of(line: str) -> int:
    try:
        return int(json.loads(line).get("step", 0))
    except (json.JSONDecodeError, TypeError, ValueError):
        return 1 << 62  # a half-written last line: drop it


def read_metrics(path: Path) -> list[dict]:
    """The records of a metrics.jsonl file (none when it does not exist); a bad line names itself."""
    if not path.is_file():
        return []
    records = []
    for lineno, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path}, line {lineno}: not valid JSON ({exc.msg})") from exc
        if not isinstance(record, dict):
            raise ValueError(f"{path}, line {lineno}: expected a JSON object")
        records.append(record)
    return records
