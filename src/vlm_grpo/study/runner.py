"""A study: conditions x seeds at one step budget, trained one after another, then evaluated alike.

A preset (`presets/<name>.yaml` in this package, or a file) holds `base` overrides shared by every run and a list of
`conditions` (name, prompt_style, injection, extra `overrides`, optional `reference` numbers
from the study). Each run trains in `out/runs/<condition>-seed<k>/`; re-running the same command
skips finished runs and resumes interrupted ones from their newest checkpoint, so a long study
survives a lost machine. Every final checkpoint is then scored greedily, in-domain and on
transfer, by `assess.evaluate_models` (the path `vlm-grpo eval` takes), and the seeds of a
condition are pooled into a mean with a 95 % t-interval.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import yaml
from tqdm.auto import tqdm

from ..config import TrainConfig, load_config, to_dict, validate
from ..core.statistics import mean_ci, steps_to_threshold, wilson_interval
from ..tasks import get_task
from ..training import checkpoint
from ..training.tracking import read_metrics

PRESETS_DIR = Path(__file__).resolve().parent / "presets"
# Keys that may differ between the invocations of one study without changing what a run computes
# (output_dir: a study folder may be moved or copied; the sharing modes are compute paths, exact up
# to float rounding, and a run records the one `auto` resolved to).
_VOLATILE = {"resume", "progress", "output_dir", "logprob_sharing", "generation_sharing"}


@dataclass
class PlannedRun:
    name: str
    condition: dict
    seed: int
    dir: Path
    cfg: TrainConfig


# ---------------------------------------------------------------- presets
def available_presets() -> list[str]:
    return sorted(p.stem for p in PRESETS_DIR.glob("*.yaml"))


def find_preset(preset: str | Path) -> Path:
    """A preset name shipped with the package, or a path to a preset file."""
    path = Path(preset)
    if path.is_file():
        return path
    named = PRESETS_DIR / f"{preset}.yaml"
    if named.is_file():
        return named
    raise ValueError(
        f"unknown study preset {str(preset)!r}; choose {', '.join(available_presets())} "
        "or give a path to a preset .yaml"
    )


def load_preset(path: Path) -> dict:
    preset = yaml.safe_load(path.read_text()) or {}
    if not isinstance(preset, dict) or not isinstance(preset.get("base", {}), dict):
        raise ValueError(f"{path}: a preset is a mapping with a `base` mapping and a `conditions` list")
    conditions = preset.get("conditions")
    if not isinstance(conditions, list) or not conditions:
        raise ValueError(f"{path}: `conditions` must be a non-empty list")
    names = [c.get("name") if isinstance(c, dict) else None for c in conditions]
    if not all(isinstance(n, str) and n for n in names) or len(set(names)) != len(names):
        raise ValueError(f"{path}: every condition needs a unique `name` (got {names})")
    return preset


def flatten(mapping: dict, prefix: str = "") -> list[str]:
    """Nested (or dotted) mapping -> `key=value` overrides; values in JSON, which YAML reads back."""
    items = []
    for key, value in mapping.items():
        if isinstance(value, dict):
            items += flatten(value, f"{prefix}{key}.")
        else:
            items.append(f"{prefix}{key}={json.dumps(value)}")
    return items


def injection_label(condition: dict) -> str:
    injection = condition.get("injection") or {}
    mode, schedule = injection.get("mode", "none"), injection.get("schedule", "constant")
    return mode if mode == "none" or schedule == "constant" else f"{mode}/{schedule}"


def plan(
    preset: dict,
    out: Path,
    seeds: int,
    steps: int | None = None,
    model: str | None = None,
    overrides: Sequence[str] = (),
    progress: bool = True,
) -> list[PlannedRun]:
    """Every run's validated config, built before anything trains so a bad key fails at once."""
    cli = ([f"max_steps={steps}"] if steps is not None else []) + ([f"model={model}"] if model else [])
    runs = []
    for condition in preset["conditions"]:
        own = [f"prompt.style={condition.get('prompt_style', 'default')}"]
        own += flatten(condition.get("injection") or {}, "injection.") + flatten(condition.get("overrides") or {})
        for seed in range(seeds):
            name = f"{condition['name']}-seed{seed}"
            run_dir = out / "runs" / name
            cfg = load_config(
                None,
                flatten(preset.get("base") or {})
                + own
                + cli
                + [f"progress={str(progress).lower()}"]
                + list(overrides)
                + [f"output_dir={run_dir}", f"seed={seed}"],
            )
            # Steps-to-threshold needs held-out evaluation during training.
            cfg.data.eval = cfg.data.eval or [cfg.data.train]
            cfg.data.eval_steps = cfg.data.eval_steps or max(1, cfg.max_steps // 10)
            runs.append(PlannedRun(name, condition, seed, run_dir, validate(cfg)))
    return runs


# ---------------------------------------------------------------- training
def _check_same_config(run: PlannedRun) -> None:
    """A run dir is reused only for the same configuration, so every seed keeps the same budget."""
    path = run.dir / "config.yaml"
    if not path.is_file():
        return
    try:
        before = to_dict(load_config(path))  # settings added since that run was written take their defaults
    except ValueError:
        before = yaml.safe_load(path.read_text()) or {}
    now = to_dict(run.cfg)
    changed = sorted(k for k in set(before) | set(now) if k not in _VOLATILE and before.get(k) != now.get(k))
    if changed:
        raise ValueError(
            f"{run.dir} was trained with a different configuration ({', '.join(changed)} differ); "
            "use another --out or delete that run folder"
        )


def _steps_saved(run_dir: Path) -> int:
    found = checkpoint.checkpoints(run_dir)
    return found[-1][0] if found else 0


def train_run(run: PlannedRun) -> str:
    """'skipped' (finished before), 'resumed' or 'ran'; a run stopped by a signal raises StudyInterrupted."""
    from ..training.setup import release_memory
    from ..training.trainer import GRPOTrainer

    _check_same_config(run)
    # The trainer writes summary.json even when a signal stops it early: finished also needs the last checkpoint.
    if (run.dir / "summary.json").is_file() and _steps_saved(run.dir) >= run.cfg.max_steps:
        return "skipped"
    resume = _steps_saved(run.dir) > 0
    run.cfg.resume = resume
    # The trainer turns Ctrl-C into "save and stop" and gives the study its handlers back when it returns.
    GRPOTrainer(run.cfg).train()
    release_memory()  # nothing of this run outlives it: the next one starts from the same memory
    if _steps_saved(run.dir) < run.cfg.max_steps:
        raise StudyInterrupted(
            f"{run.name} stopped at step {_steps_saved(run.dir)} of {run.cfg.max_steps}; "
            "run the same command again to resume"
        )
    return "resumed" if resume else "ran"


class StudyInterrupted(RuntimeError):
    """A run stopped early (signal); its checkpoint is saved and the study resumes on the next call."""


# ---------------------------------------------------------------- measuring
def wall_seconds(records: Sequence[dict]) -> float:
    """Training wall time over every session: elapsed time restarts at each resume, so sum the segments."""
    total, last = 0.0, None
    for record in records:
        elapsed = record.get("time/elapsed_s")
        if elapsed is None:
            continue
        if last is not None and elapsed < last:
            total += last
        last = elapsed
    return total + (last or 0.0)


def final_eval(run: PlannedRun, n: int, progress: bool = True) -> dict:
    """Greedy in-domain and transfer scores of the final checkpoint, cached in the run folder."""
    from ..evaluation.checkpoints import evaluate_models
    from ..tasks.styles import get_style
    from ..training.precision import inference_dtype
    from ..training.setup import release_memory

    final = checkpoint.latest(run.dir)
    if final is None:
        raise RuntimeError(f"{run.dir} holds no checkpoint to evaluate")
    out = run.dir / "final_eval"
    cache = out / "summary.json"
    # A resumed run rewrites its final checkpoint: a cached score older than it is stale.
    if cache.is_file() and cache.stat().st_mtime > (final / "trainer_state.pt").stat().st_mtime:
        cached = json.loads(cache.read_text())
        ((key, scores),) = cached["results"].items()
        if Path(key).name == final.name and cached["n"] == n:  # by name: the study folder may have moved
            return scores
    cfg = run.cfg
    summary = evaluate_models(
        [str(final)],
        cfg.data.eval,
        get_style(cfg.prompt, get_task(cfg.task, cfg.task_options)),
        n=n,
        out=out,
        max_new_tokens=cfg.max_completion_length,
        holdout=cfg.data.eval_holdout,
        images=cfg.data.images,
        train=cfg.data.train,
        device=cfg.device,
        dtype=inference_dtype(cfg.precision, cfg.dtype),  # evaluate in the numerics the run trained in
        seed=cfg.seed,
        progress=progress,
        task=get_task(cfg.task, cfg.task_options),
        columns=cfg.data.columns,
    )
    release_memory()
    return summary["results"][str(final)]


def measure(run: PlannedRun, scores: dict, threshold: float) -> dict:
    """One seed's numbers; steps-to-threshold from metrics.jsonl, which keeps every session's evals."""
    in_domain, transfer = run.cfg.data.eval[0], run.cfg.data.eval[1:]
    records = read_metrics(run.dir / "metrics.jsonl")
    key = f"eval/{in_domain}/accuracy"
    logged = [(r["step"], r[key]) for r in records if "step" in r and r.get(key) is not None]
    first_transfer = scores[transfer[0]] if transfer else {}
    return {
        "in_domain_accuracy": scores[in_domain]["accuracy"],
        "transfer_accuracy": first_transfer.get("accuracy"),
        "generalization_ratio": first_transfer.get("generalization_ratio"),
        "steps_to_threshold": steps_to_threshold([s for s, _ in logged], [v for _, v in logged], threshold),
        "wall_s": wall_seconds(records),
    }


def _pool(values: list) -> dict:
    """mean_ci over the seeds that have a value; `values` keeps one entry per seed (None: missing)."""
    return {**mean_ci([v for v in values if v is not None]), "values": values}


def aggregate(preset: dict, runs: list[PlannedRun], measures: dict[str, dict], eval_n: int = 0) -> list[dict]:
    """Per condition, each measure pooled over seeds (mean and t-interval). An accuracy measured on one
    seed gets that run's Wilson interval over its `eval_n` held-out samples instead (`ci_kind`)."""
    conditions = []
    for condition in preset["conditions"]:
        mine = [r for r in runs if r.condition is condition]
        entry = {
            "name": condition["name"],
            "prompt_style": condition.get("prompt_style", "default"),
            "injection": injection_label(condition),
            "seeds": [r.seed for r in mine],
            "runs": [str(r.dir) for r in mine],
        }
        for key in ("in_domain_accuracy", "transfer_accuracy", "generalization_ratio", "steps_to_threshold", "wall_s"):
            entry[key] = _pool([measures[r.name][key] for r in mine])
        for key in ("in_domain_accuracy", "transfer_accuracy"):
            pooled = entry[key]
            if pooled["ci"] is None and pooled["mean"] is not None and eval_n:
                pooled["ci"] = list(wilson_interval(round(pooled["mean"] * eval_n), eval_n))
                pooled["ci_kind"] = "wilson"
        # Seeds that never reach the threshold have no step count: say how many did.
        entry["steps_to_threshold"]["reached"] = sum(v is not None for v in entry["steps_to_threshold"]["values"])
        if condition.get("reference"):
            entry["reference"] = condition["reference"]
        conditions.append(entry)
    return conditions


# ---------------------------------------------------------------- the study
def run_study(
    preset: str | Path = "seed",
    seeds: int | None = None,
    steps: int | None = None,
    out: str | Path | None = None,
    model: str | None = None,
    overrides: Sequence[str] = (),
    n: int | None = None,
    threshold: float | None = None,
    progress: bool = True,
) -> dict:
    """Train (or skip, or resume) every run, evaluate each, write study.json, study.md and report/."""
    path = find_preset(preset)
    spec = load_preset(path)
    out = Path(out) if out is not None else Path("runs") / f"study-{path.stem}"
    seeds = int(seeds if seeds is not None else spec.get("seeds", 3))
    threshold = float(threshold if threshold is not None else spec.get("threshold", 0.9))
    eval_n = int(n if n is not None else spec.get("eval_n", 200))
    if seeds < 1 or eval_n < 1 or not 0 < threshold <= 1:
        raise ValueError(f"need --seeds >= 1, --n >= 1 and a threshold in (0, 1] (got {seeds}, {eval_n}, {threshold})")
    runs = plan(spec, out, seeds, steps, model, overrides, progress)
    _check_inputs(runs)
    status: dict[str, list[str]] = {"ran": [], "resumed": [], "skipped": []}
    for i, run in enumerate(runs, start=1):
        tqdm.write(f"[{i}/{len(runs)}] {run.name}")
        outcome = train_run(run)
        status[outcome].append(run.name)
        if outcome == "skipped":
            tqdm.write("  finished in an earlier call: skipped")
    measures = {}
    for run in tqdm(runs, desc="final evaluation", disable=not progress):
        measures[run.name] = measure(run, final_eval(run, eval_n, progress), threshold)
    first = runs[0].cfg
    study = {
        "preset": path.stem,
        "description": spec.get("description"),
        "model": ", ".join(sorted({r.cfg.model for r in runs})),
        "max_steps": first.max_steps,
        "seeds": seeds,
        "threshold": threshold,
        "eval_n": eval_n,
        "decoding": "greedy",
        "in_domain": first.data.eval[0],
        "transfer": first.data.eval[1:],
        "conditions": aggregate(spec, runs, measures, eval_n),
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / "study.json").write_text(json.dumps(study, indent=2))
    (out / "study.md").write_text(markdown(study))
    from ..training.setup import release_memory
    from .report import write_report

    write_report([r.dir for r in runs], out / "report", study_json=out / "study.json")
    release_memory()  # matplotlib figures sit in reference cycles until a collection
    return {**status, "study": study, "out": str(out)}


def _check_inputs(runs: list[PlannedRun]) -> None:
    """Unknown models or data sets fail before hours of training, not after."""
    from ..data import open_source
    from ..models import check_model_name

    checked = set()
    for run in runs:
        cfg = run.cfg
        for spec in [cfg.data.train, *cfg.data.eval]:
            key = json.dumps([spec, cfg.task, cfg.task_options, cfg.data.columns], sort_keys=True, default=str)
            if key not in checked:
                open_source(spec, None, get_task(cfg.task, cfg.task_options), cfg.data.columns)
                checked.add(key)
    for name in sorted({r.cfg.model for r in runs}):
        check_model_name(name)


# ---------------------------------------------------------------- markdown
def _cell(stat: dict, percent: bool = True, seconds: bool = False) -> str:
    if not stat or stat.get("mean") is None:
        return "-"
    if stat.get("ci") is None:  # one seed: no interval over seeds
        mean = stat["mean"]
        return f"{mean:.1%} (1 seed)" if percent else f"{mean:.0f}{' s' if seconds else ''} (1 seed)"
    mean, (lo, hi) = stat["mean"], stat["ci"]
    if percent:
        return f"{mean:.1%} ± {(hi - lo) / 2:.1%} [{lo:.1%}, {hi:.1%}]"
    if seconds:
        return f"{mean:.0f} s ± {(hi - lo) / 2:.0f}"
    return f"{mean:.0f} ± {(hi - lo) / 2:.0f} [{lo:.0f}, {hi:.0f}]"


def markdown(study: dict) -> str:
    transfer = ", ".join(study["transfer"]) or "-"
    lines = [
        f"# Study `{study['preset']}`: {study['model']}, {study['max_steps']} steps, {study['seeds']} seed(s)",
        "",
        study.get("description") or "",
        "",
        f"Greedy accuracy on {study['eval_n']} held-out samples of {study['in_domain']} (in-domain) and "
        f"{transfer} (transfer), mean ± half-width [95 % t-interval over seeds; with one seed, the run's "
        "Wilson interval over its held-out samples]. Steps to threshold: first "
        f"step whose held-out in-domain accuracy is >= {study['threshold']:.0%}, averaged over the seeds "
        "that reached it (k/n).",
        "",
        "| condition | prompt | injection | in-domain accuracy | transfer accuracy | transfer / in-domain "
        f"| steps to {study['threshold']:.0%} | wall time |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for c in study["conditions"]:
        steps = c["steps_to_threshold"]
        reached = (
            f"{_cell(steps, percent=False)} ({steps['reached']}/{len(c['seeds'])})"
            if steps["reached"]
            else f"not reached (0/{len(c['seeds'])})"
        )
        ratio = "-" if c["generalization_ratio"]["mean"] is None else f"{c['generalization_ratio']['mean']:.2f}"
        lines.append(
            f"| {c['name']} | {c['prompt_style']} | {c['injection']} | {_cell(c['in_domain_accuracy'])} | "
            f"{_cell(c['transfer_accuracy'])} | {ratio} | "
            f"{reached} | {_cell(c['wall_s'], percent=False, seconds=True)} |"
        )
    lines += _reference(study)
    return "\n".join(lines) + "\n"


def _reference(study: dict) -> list[str]:
    rows = [c for c in study["conditions"] if c.get("reference")]
    if not rows:
        return []
    lines = [
        "",
        "## The study's own numbers",
        "",
        "Shringarpure (2025), *Breaking the Cold Start Barrier*: Qwen2-VL-2B on CLEVR (in-domain) and "
        "SuperCLEVR (transfer), one run per condition, no intervals. Compare directions (injection "
        "speeds up the weak-prompt start but costs transfer; under r1v the gap closes), not absolute values.",
        "",
        "| condition | base format rate | CLEVR | SuperCLEVR | steps to 90 % | steps trained | time |",
        "|---|---|---|---|---|---|---|",
    ]
    for c in rows:
        ref = c["reference"]
        fmt = [
            f"{v:.0%}" if isinstance(v, float) else str(v)
            for v in (ref.get("in_domain_accuracy", "-"), ref.get("transfer_accuracy", "-"))
        ]
        lines.append(
            f"| {c['name']} | {ref.get('baseline', '-')} | {fmt[0]} | {fmt[1]} | "
            f"{ref.get('steps_to_threshold', '-')} | {ref.get('steps_trained', '-')} | {ref.get('wall', '-')} |"
        )
    return lines
