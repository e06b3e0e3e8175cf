"""Per-step metrics: the rollout's, split by row origin (sampled or injected); the update's, from
`core.algo.LossStats`; and the seconds each phase of the step took (`PhaseClock`).
"""

from __future__ import annotations

import contextlib
import json
import time
from pathlib import Path

import torch

from ..core import algo
from ..core.statistics import steps_to_threshold
from ..rollout import Rollout
from ..tasks import Task


def rollout_metrics(rollout: Rollout, task: Task) -> dict:
    """Reward, format and accuracy of the policy's own samples (computed before injection).

    `rollout/answer_present_rate` is the study's format rate (its "number present" for counting), for
    every task, under that one name."""
    scores = rollout.scores
    rewards = torch.tensor([s.reward for s in scores])
    lengths = rollout.completion_mask.sum(1)
    n = len(scores)
    present = sum(s.answer_present for s in scores) / n
    return {
        "reward/mean": float(rewards.mean()),
        "reward/std": float(rewards.std()) if n > 1 else 0.0,
        "rollout/answer_present_rate": present,
        "rollout/accuracy": sum(s.correct for s in scores) / n,
        "rollout/strict_accuracy": sum(s.strict_correct for s in scores) / n,
        "rollout/format_rate": sum(s.format_ok for s in scores) / n,
        "groups/frac_zero_std_sampled": frac_zero_std(rollout),
        "completion/mean_length": float(lengths.float().mean()),
        "completion/truncated_rate": float(rollout.truncated.float().mean()),
    }


def update_metrics(stats: algo.LossStats, grad_norms: list[float], updates: int, skipped: int, weighted: bool) -> dict:
    """The clipped updates of one step: loss, KL, ratios and clipping by row origin, gradient norm;
    `weighted`: the engine/trainer importance weights were applied."""
    return {
        "loss/policy": stats.total("loss_policy") / updates,
        "loss/kl": stats.mean("kl"),
        "policy/ratio_mean": stats.mean("ratio"),
        "policy/clip_fraction": stats.mean("clip"),
        "policy/ratio_mean_injected": stats.mean("ratio_injected"),
        "policy/ratio_mean_sampled": stats.mean("ratio_sampled"),
        "policy/clip_fraction_injected": stats.mean("clip_injected"),
        "policy/clip_fraction_sampled": stats.mean("clip_sampled"),
        "injection/logp_mean": stats.mean("logp_injected"),
        "optim/grad_norm": sum(grad_norms) / len(grad_norms),
        "optim/skipped_steps": skipped,
        **({"engine/is_weight_mean": stats.mean("is_weight")} if weighted else {}),
    }


class PhaseClock:
    """Seconds spent in each named phase of a step, a phase nested in another counted in its own name
    only (sampling's time excludes the prompt encoding it asks for). `take()` gives `time/<phase>_s`
    for the phases since the last take, and starts again. Host time, from one thread (the loop's):
    on a GPU a phase's kernels may still run when the next phase starts."""

    def __init__(self, now=time.perf_counter):
        self.now = now
        self.seconds: dict[str, float] = {}
        self.inner: list[float] = []  # per open phase: seconds of the phases nested in it so far

    @contextlib.contextmanager
    def phase(self, name: str):
        t0 = self.now()
        self.inner.append(0.0)
        try:
            yield
        finally:
            spent, nested = self.now() - t0, self.inner.pop()
            self.seconds[name] = self.seconds.get(name, 0.0) + spent - nested
            if self.inner:
                self.inner[-1] += spent

    def take(self) -> dict[str, float]:
        taken, self.seconds = {f"time/{name}_s": s for name, s in self.seconds.items()}, {}
        return taken


def frac_zero_std(rollout: Rollout) -> float:
    """Fraction of groups whose rewards are all equal: they carry no learning signal."""
    grouped = rollout.rewards.view(-1, rollout.group_size)
    return float((grouped.max(1).values == grouped.min(1).values).float().mean())


def completion_rows(rollout: Rollout, task: Task) -> list[dict]:
    G = rollout.group_size
    return [
        {
            "prompt_id": rollout.prompts.samples[row // G].id,
            "answer": task.describe(rollout.answer_of_row(row)),
            "injected": bool(rollout.injected[row]),
            "text": text if rollout.turns is None or rollout.turns[row] is None else rollout.turns[row].transcript,
            "reward": score.reward,
            "answer_present": score.answer_present,
            "correct": score.correct,
            "format_ok": score.format_ok,
        }
        for row, (text, score) in enumerate(zip(rollout.texts, rollout.scores))
    ]


def run_summary(history: list[dict], eval_sets: list[str], out: Path) -> dict:
    """Steps to thresholds and final held-out accuracies of a run; written to out/summary.json."""
    steps = [h["step"] for h in history]
    summary = {"steps": steps[-1] if steps else 0, "wall_s": history[-1]["time/elapsed_s"] if history else 0.0}
    for key in ("rollout/answer_present_rate", "rollout/accuracy"):
        for threshold in (0.5, 0.9):
            summary[f"steps_to_{threshold}/{key}"] = steps_to_threshold(steps, [h.get(key) for h in history], threshold)
    for name in eval_sets:
        key = f"eval/{name}/accuracy"
        summary[f"steps_to_0.9/{key}"] = steps_to_threshold(steps, [h.get(key) for h in history], 0.9)
        summary[f"final/{key}"] = next((h[key] for h in reversed(history) if key in h), None)
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary
