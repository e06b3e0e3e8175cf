"""Per-step metrics of a rollout, split by row origin (sampled or injected).

The update's metrics come from `core.algo.LossStats`.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from ..core.statistics import steps_to_threshold
from ..rollout import Rollout
from ..tasks import Task


def rollout_metrics(rollout: Rollout, task: Task) -> dict:
    """Reward, format and accuracy of the policy's own samples (computed before injection).

    `rollout/answer_present_rate` is the study's format rate for every task; a task may log it under
    its own name too (counting: `rollout/number_present_rate`, the study's word)."""
    scores = rollout.scores
    rewards = torch.tensor([s.reward for s in scores])
    lengths = rollout.completion_mask.sum(1)
    n = len(scores)
    present = sum(s.answer_present for s in scores) / n
    aliases = {f"rollout/{task.present_alias}_rate": present} if task.present_alias else {}
    return {
        "reward/mean": float(rewards.mean()),
        "reward/std": float(rewards.std()) if n > 1 else 0.0,
        **aliases,
        "rollout/answer_present_rate": present,
        "rollout/accuracy": sum(s.correct for s in scores) / n,
        "rollout/strict_accuracy": sum(s.strict_correct for s in scores) / n,
        "rollout/format_rate": sum(s.format_ok for s in scores) / n,
        "groups/frac_zero_std_sampled": frac_zero_std(rollout),
        "completion/mean_length": float(lengths.float().mean()),
        "completion/truncated_rate": float(rollout.truncated.float().mean()),
    }


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
            "text": text,
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
