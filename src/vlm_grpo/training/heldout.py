"""The held-out sets a run evaluates during training: chosen once, scored greedily with the task."""

from __future__ import annotations

from ..config import DataConfig
from ..evaluation.records import EvalSummary, heldout_samples, sample_records
from ..tasks import Task


class HeldOutSets:
    """The held-out samples of each `data.eval` set, chosen once, scored with the task."""

    def __init__(self, data: DataConfig, task: Task | None):
        self.task = task
        self.sets = {
            name: heldout_samples(
                name,
                data.eval_size,
                data.eval_holdout,
                data.images if name == data.train else None,
                train=data.train,
                task=task,
                columns=data.columns,
                split=data.split if name == data.train else None,
            )
            for name in data.eval
        }

    @classmethod
    def none(cls) -> HeldOutSets:
        """No sets (processes other than the first evaluate nothing)."""
        return cls(DataConfig(eval=[]), None)

    def __iter__(self):
        return iter(self.sets)

    def __len__(self) -> int:
        return len(self.sets)

    def evaluate(self, engine, style, max_new_tokens: int) -> dict:
        """eval/<set>/accuracy and the answer-present rate per set,
        greedy, sampled by `engine`."""
        metrics = {}
        for name, samples in self.sets.items():
            records = sample_records(
                engine, style, samples, name, batch_size=32, max_new_tokens=max_new_tokens, task=self.task
            )
            summary = EvalSummary.of(records)
            metrics[f"eval/{name}/accuracy"] = summary.accuracy.value
            metrics[f"eval/{name}/answer_present_rate"] = summary.answer_present_rate.value
        return metrics
