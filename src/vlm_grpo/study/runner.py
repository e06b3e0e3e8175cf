"""A study: conditions x seeds at one step budget, trained (one or `jobs` at a time), then evaluated alike.

A preset (`presets/<name>.yaml` in this package, or a file) holds `base` overrides shared by every
run, a list of `conditions` (name, prompt_style, injection, extra `overrides`, optional `processes`
to train each run as that many trainer processes under torchrun, optional `reference` numbers from
the study) and optional `pairs` ([treated, control] condition names compared seed by
seed). Each run trains in `out/runs/<condition>-seed<k>/`; re-running the same command skips
finished runs and resumes interrupted ones from their newest checkpoint, so a long study survives
a lost machine. Every final checkpoint is then scored greedily, in-domain and on transfer, by
`evaluation.final_eval.evaluate_models` (the path `vlm-grpo eval` takes); `measures.py` pools the
seeds and pairs the conditions, `tables.py` writes study.md.
"""

from __future__ import annotations

import functools
import json
import multiprocessing
import os
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path

import yaml
from tqdm.auto import tqdm

from ..config import TrainConfig, from_dict, load_config, to_dict, upgraded, validate
from ..tasks import get_task
from ..training import checkpoint
from .measures import aggregate, measure, paired
from .processes import processes_of, train_in_processes
from .tables import markdown

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
    pairs = preset.get("pairs") or []
    if not all(isinstance(p, list) and len(p) == 2 and set(p) <= set(names) for p in pairs):
        raise ValueError(f"{path}: `pairs` is a list of [treated, control] condition names (known: {names})")
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
            _check_processes(condition, cfg)
            runs.append(PlannedRun(name, condition, seed, run_dir, validate(cfg)))
    return runs


def _check_processes(condition: dict, cfg: TrainConfig) -> None:
    """A condition's `processes` is checked with its run's batch before anything trains."""
    processes = condition.get("processes", 1)
    batches = (cfg.prompts_per_step, cfg.effective_minibatch_size)
    if not isinstance(processes, int) or processes < 1 or any(b % processes for b in batches):
        raise ValueError(
            f"condition {condition['name']}: processes must be a whole number >= 1 dividing prompts_per_step "
            f"({cfg.prompts_per_step}) and the minibatch ({cfg.effective_minibatch_size}); got {processes!r}"
        )


# ---------------------------------------------------------------- training
def _check_same_config(run: PlannedRun) -> None:
    """A run dir is reused only for the same configuration, so every seed keeps the same budget."""
    path = run.dir / "config.yaml"
    if not path.is_file():
        return
    raw = yaml.safe_load(path.read_text()) or {}
    try:  # settings added since that run was written take their defaults; moved keys count at their new place
        before = to_dict(from_dict(TrainConfig, upgraded(raw)))
    except ValueError:
        before = raw
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
    from ..training.trainer import Trainer

    _check_same_config(run)
    # The trainer writes summary.json even when a signal stops it early: finished also needs the last checkpoint.
    if (run.dir / "summary.json").is_file() and _steps_saved(run.dir) >= run.cfg.max_steps:
        return "skipped"
    resume = _steps_saved(run.dir) > 0
    run.cfg.resume = resume
    processes = run.condition.get("processes", 1)
    if resume and processes_of(run.dir) != processes:
        raise ValueError(
            f"{run.dir} was trained by {processes_of(run.dir)} process(es), and its condition now asks for "
            f"{processes}; use another --out or delete that run folder"
        )
    if processes > 1:
        code, stopped = train_in_processes(run.cfg, processes)
        if code and not stopped and _steps_saved(run.dir) < run.cfg.max_steps:
            raise RuntimeError(f"{run.name}: its {processes} trainer processes stopped (exit {code}); see above")
    else:  # the trainer turns Ctrl-C into "save and stop" and gives the study its handlers back when it returns
        Trainer(run.cfg).train()
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
def final_eval(run: PlannedRun, n: int, progress: bool = True) -> dict:
    """Greedy in-domain and transfer scores of the final checkpoint, cached in the run folder."""
    from ..evaluation.final_eval import evaluate_models
    from ..evaluation.records import EvalOptions
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
    cfg, task = run.cfg, get_task(run.cfg.task, run.cfg.task_options)
    options = EvalOptions(
        holdout=cfg.data.eval_holdout,
        images=cfg.data.images,
        task=task,
        columns=cfg.data.columns,
        max_new_tokens=cfg.max_completion_length,
        device=cfg.device,
        dtype=inference_dtype(cfg.precision),  # evaluate in the numerics the run trained in
        seed=cfg.seed,
        progress=progress,
        tools=tuple(cfg.tools.names),
        max_turns=cfg.tools.max_turns,
    )
    style = get_style(cfg.prompt, task)
    summary = evaluate_models([str(final)], cfg.data.eval, style, n=n, out=out, train=cfg.data.train, options=options)
    release_memory()
    return summary["results"][str(final)]


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
    jobs: int = 1,
) -> dict:
    """Train (or skip, or resume) every run, evaluate each, write study.json, study.md and report/.

    `jobs` > 1 trains and evaluates that many runs side by side, each in its own process with an
    equal share of the CPU threads (a run's numbers then match a one-thread run of it)."""
    path = find_preset(preset)
    spec = load_preset(path)
    out = Path(out) if out is not None else Path("runs") / f"study-{path.stem}"
    seeds = int(seeds if seeds is not None else spec.get("seeds", 3))
    threshold = float(threshold if threshold is not None else spec.get("threshold", 0.9))
    eval_n = int(n if n is not None else spec.get("eval_n", 200))
    if seeds < 1 or eval_n < 1 or not 0 < threshold <= 1 or jobs < 1:
        raise ValueError(
            "need --seeds >= 1, --n >= 1, --jobs >= 1 and a threshold in (0, 1] "
            f"(got {seeds}, {eval_n}, {jobs}, {threshold})"
        )
    runs = plan(spec, out, seeds, steps, model, overrides, progress and jobs == 1)
    _check_inputs(runs)
    status: dict[str, list[str]] = {"ran": [], "resumed": [], "skipped": []}
    for run, outcome in each_run(train_run, runs, jobs, "trained"):
        status[outcome].append(run.name)
    evaluate = functools.partial(final_eval, n=eval_n, progress=progress and jobs == 1)
    measures = {
        run.name: measure(run.dir, run.cfg.data.eval, scores, threshold, run.cfg.rows_per_step)
        for run, scores in each_run(evaluate, runs, jobs, "evaluated")
    }
    first = runs[0].cfg
    conditions = aggregate(spec["conditions"], runs, measures, eval_n)
    study = {
        "preset": path.stem,
        "description": spec.get("description"),
        "model": ", ".join(sorted({r.cfg.model for r in runs})),
        "max_steps": first.max_steps,
        "eval_steps": first.data.eval_steps,
        "seeds": seeds,
        "threshold": threshold,
        "eval_n": eval_n,
        "decoding": "greedy",
        "in_domain": first.data.eval[0],
        "transfer": first.data.eval[1:],
        "conditions": conditions,
        "pairs": paired(conditions, spec.get("pairs") or []),
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / "study.json").write_text(json.dumps(study, indent=2))
    (out / "study.md").write_text(markdown(study))
    from ..training.setup import release_memory
    from .report import write_report

    write_report([r.dir for r in runs], out / "report", study_json=out / "study.json")
    release_memory()  # matplotlib figures sit in reference cycles until a collection
    return {**status, "study": study, "out": str(out)}


def each_run(fn, runs: list[PlannedRun], jobs: int, done: str):
    """Yield (run, fn(run)) for every run: one after another in this process, or `jobs` at a time in
    worker processes. A worker stopped by Ctrl-C saves its run; the study resumes on the next call."""
    if jobs == 1:
        for i, run in enumerate(runs, start=1):
            tqdm.write(f"[{i}/{len(runs)}] {run.name}")
            result = fn(run)
            if result == "skipped":
                tqdm.write("  finished in an earlier call: skipped")
            yield run, result
        return
    threads = max(1, (os.cpu_count() or 1) // jobs)
    context = multiprocessing.get_context("spawn")  # a fresh interpreter: no forked torch thread pools
    pool = ProcessPoolExecutor(jobs, mp_context=context, initializer=_share_threads, initargs=(threads,))
    try:
        futures = {pool.submit(fn, run): run for run in runs}
        for i, future in enumerate(as_completed(futures), start=1):
            run = futures[future]
            result = future.result()
            tqdm.write(f"[{i}/{len(runs)}] {run.name}: {result if isinstance(result, str) else done}")
            yield run, result
    except (KeyboardInterrupt, BrokenProcessPool) as e:
        raise StudyInterrupted(f"the study stopped ({type(e).__name__}); run the same command again to resume") from e
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _share_threads(threads: int) -> None:
    import torch

    torch.set_num_threads(min(threads, torch.get_num_threads()))


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
