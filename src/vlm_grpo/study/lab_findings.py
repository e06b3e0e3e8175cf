"""The counting lab's numbers that `vlm-grpo assess` prints beside the study's advice, computed from
the committed per-seed files under docs/results/ and written to evaluation/lab_findings.json
(`python -m vlm_grpo.study.lab_findings`; `tests/study/test_doc_numbers.py` checks the file is current)."""

from __future__ import annotations

import json

from ..core.statistics import km_median
from .doc_numbers import ROOT, difference, values
from .map_report import base_rates

FINDINGS = ROOT / "src" / "vlm_grpo" / "evaluation" / "lab_findings.json"


def _difference(name: str, treated: str, control: str, key: str) -> dict:
    stat = difference(name, treated, control, key)
    return {"mean": round(stat["mean"], 4), "ci": [round(v, 4) for v in stat["ci"]], "seeds": stat["n"]}


def _reached_by(name: str, cond: str, key: str, step: int) -> int:
    return sum(t is not None and t <= step for t in values(name, cond, key).values())


def findings() -> dict:
    """Per flow-chart zone, the lab's measured numbers (fractions, steps, seeds)."""
    rates = base_rates()
    budget = json.loads((ROOT / "docs" / "results" / "seed" / "study.json").read_text())["max_steps"]
    ap90, acc70 = "steps_to_answer_present_90", "steps_to_threshold"
    return {
        "source": "docs/results/schedules/study.json, docs/results/seed/study.json (G 8 x 4 prompts, 5 seeds)",
        "severe": {
            "base_rate": rates["lab-base-cold"],
            "budget": budget,
            "none_ap90_reached": _reached_by("schedules", "none", ap90, budget),
            "none_ap90_median": km_median(list(values("schedules", "none", ap90).values()), budget),
            "seeds": len(values("schedules", "none", ap90)),
            "transfer": _difference("schedules", "random", "none", "transfer_accuracy"),
            "transfer_linear_decay": _difference("schedules", "linear-decay", "none", "transfer_accuracy"),
            "transfer_adaptive": _difference("schedules", "adaptive", "none", "transfer_accuracy"),
        },
        "weak": {
            "base_rate": rates["lab-base"],
            "seeds": len(values("seed", "default-none", acc70)),
            "acc70_by_30": {arm: _reached_by("seed", f"default-{arm}", acc70, 30) for arm in ("inject", "none")},
            "acc70_by_budget": {
                arm: _reached_by("seed", f"default-{arm}", acc70, budget) for arm in ("inject", "none")
            },
            "ap90_median": {
                arm: km_median(list(values("seed", f"default-{arm}", ap90).values()), budget)
                for arm in ("inject", "none")
            },
            "transfer": _difference("seed", "default-inject", "default-none", "transfer_accuracy"),
        },
        "strong": {
            "in_domain": _difference("seed", "r1v-inject", "r1v-none", "in_domain_accuracy"),
            "transfer": _difference("seed", "r1v-inject", "r1v-none", "transfer_accuracy"),
        },
    }


def text() -> str:
    return json.dumps(findings(), indent=1) + "\n"


def main() -> None:
    FINDINGS.write_text(text())
    print(FINDINGS)


if __name__ == "__main__":
    main()
