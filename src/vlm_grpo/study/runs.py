"""Run folders as the report reads them: metrics records, configuration and a plot label."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..training.tracking import read_metrics

NP, ACC, REW = "rollout/answer_present_rate", "rollout/accuracy", "reward/mean"
_STUDY_NP = "rollout/number_present_rate"  # the name runs of counting logged it under before


def present_word(runs: Sequence[Run]) -> str:
    """How tables and figures name NP: "answer-present", the one name the project's tables use for it
    (for counting, an answer is a number)."""
    return "answer-present"


def config_value(cfg: Mapping, dotted: str, default: Any = None) -> Any:
    """Look up ``a.b`` either as a flat key or in nested dicts."""
    if dotted in cfg:
        return cfg[dotted]
    node: Any = cfg
    for part in dotted.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return default
        node = node[part]
    return node


@dataclass
class Run:
    """One training run: its name, a plot label, its config and its metric records."""

    name: str
    label: str
    config: dict = field(default_factory=dict)
    metrics: list = field(default_factory=list)

    def series(self, key: str) -> tuple[list[int], list[float]]:
        """(steps, values) of every stepped record holding a numeric ``key``."""
        steps, vals = [], []
        for rec in self.metrics:
            v = rec.get(key)
            if "step" in rec and isinstance(v, (int, float)) and math.isfinite(v):
                steps.append(rec["step"])
                vals.append(float(v))
        return steps, vals

    @property
    def injection_mode(self) -> str:
        return str(config_value(self.config, "injection.mode", "unknown"))

    @property
    def eval_datasets(self) -> list[str]:
        names = {
            k.split("/")[1]
            for rec in self.metrics
            for k in rec
            if k.startswith("eval/") and k.endswith("/accuracy") and k.count("/") == 2
        }
        return sorted(names)


def load_run(path: str | Path) -> Run:
    """Read ``metrics.jsonl`` (+ optional ``config.yaml``) from a run directory."""
    path = Path(path)
    mfile = path / "metrics.jsonl"
    if not mfile.is_file():
        raise FileNotFoundError(f"run directory {path}: missing metrics file {mfile}")
    metrics = read_metrics(mfile)
    for record in metrics:
        if _STUDY_NP in record and NP not in record:
            record[NP] = record[_STUDY_NP]
    config: dict = {}
    cfile = path / "config.yaml"
    if cfile.is_file():
        import yaml

        config = yaml.safe_load(cfile.read_text()) or {}
        if not isinstance(config, dict):
            raise ValueError(f"{cfile}: expected a YAML mapping, got {type(config).__name__}")
    name = str(config.get("name") or path.name)
    parts = [
        f"{k}={config_value(config, k)}"
        for k in ("prompt.style", "injection.mode", "seed")
        if config_value(config, k) is not None
    ]
    label = f"{name} ({', '.join(parts)})" if parts else name
    return Run(name=name, label=label, config=config, metrics=metrics)


def smooth(values: Sequence[float | None], window: int) -> list[float | None]:
    """Centered moving average over the non-None values in each window.

    Positions holding ``None`` stay ``None`` (gaps are not filled); a window <= 1
    returns a copy.
    """
    vals = list(values)
    if window <= 1:
        return vals
    half = window // 2
    out: list[float | None] = []
    for i, v in enumerate(vals):
        if v is None:
            out.append(None)
            continue
        near = [x for x in vals[max(0, i - half) : i + half + 1] if x is not None]
        out.append(sum(near) / len(near))
    return out
