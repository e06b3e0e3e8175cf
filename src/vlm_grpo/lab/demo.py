"""The lab end to end: the study's procedure on tiny models, offline, on a CPU.

1. assess both shipped bases (`lab-base`, mild cold start; `lab-base-cold`, severe) under both
   prompt styles, sampled and greedy;
2. train each with and without guidance injection at one step budget (the `lab-demo` study
   preset), evaluating held-out in-domain (`lab-clevr`) and transfer (`lab-superclevr`) accuracy
   during training and at the end;
3. write the report: learning curves, the two phases, injection vs none, the cross-domain and
   baseline charts, and the results table.
"""

from __future__ import annotations

from pathlib import Path

from tqdm.auto import tqdm

BASES = ("lab-base", "lab-base-cold")


def run_demo(
    out: str | Path = "runs/lab-demo", steps: int | None = None, seeds: int = 1, n: int = 200, progress: bool = True
) -> Path:
    """Runs (or resumes) the whole lab pipeline and returns the path of its report.md."""
    from ..evaluation.assess import assess
    from ..evaluation.records import EvalOptions
    from ..study.report import write_report
    from ..study.runner import run_study

    out = Path(out)
    assessments = {}
    for base in BASES:
        folder = out / f"assess-{base}"
        tqdm.write(f"assessing {base} (default and r1v prompts, {n} held-out scenes)")
        assess(
            base,
            "lab-clevr",
            ("default", "r1v"),
            n=n,
            out=folder,
            options=EvalOptions(progress=progress),
        )
        assessments[base] = folder / "assessment.json"
    tqdm.write("training with and without injection (study preset lab-demo)")
    result = run_study("lab-demo", seeds=seeds, steps=steps, out=out / "study", n=n, progress=progress)
    runs = sorted((out / "study" / "runs").iterdir())
    return (
        write_report(
            runs, out / "report", study_json=out / "study" / "study.json", assessment_json=assessments["lab-base"]
        )
        if result
        else out
    )
