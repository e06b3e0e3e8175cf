"""The `vlm-grpo` command: parsing only; the work is done by the library."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="GRPO for vision-language models, with guidance injection for the cold start.",
)


def _fail(exc: Exception) -> None:
    typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code=2)


# Each command's help ends with an example. Help text is rich markup, where [...] is a style tag that
# is dropped from the output: a literal square bracket is escaped, \[.
@app.command(
    context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
    epilog="Example: vlm-grpo train configs/smoke.yaml output_dir=runs/smoke injection.mode=random",
)
def train(
    config: Optional[Path] = typer.Argument(None, help="YAML preset (only what differs from the defaults)."),
    overrides: Optional[List[str]] = typer.Argument(
        None, help="key=value overrides; dots for nesting (injection.mode=random)."
    ),
) -> None:
    r"""Train with GRPO: `vlm-grpo train CONFIG.yaml \[key=value ...]`."""
    from .config import ConfigError, load_config

    args = list(overrides or [])
    if config is not None and "=" in str(config) and not Path(config).exists():
        args.insert(0, str(config))
        config = None
    try:
        cfg = load_config(config, args)
    except ConfigError as exc:
        _fail(exc)
    from .training.trainer import train as run_training

    try:
        summary = run_training(cfg)
    except (*_USER_ERRORS, FloatingPointError) as exc:
        _fail(exc)
    if summary:  # only the main process of a multi-process run summarises
        typer.echo(f"done: {summary['steps']} steps in {summary['wall_s']:.1f} s; outputs in {cfg.output_dir}")


@app.command(epilog="Example: vlm-grpo models")
def models() -> None:
    """List the registered model names and the model families' support matrix."""
    from .models import registered_models
    from .models.families import FAMILIES, GENERIC

    names = registered_models()
    for name in names:
        typer.echo(name)
    rows = [("family", "model types", "sampling", "log-probs", "tiny model")]
    for family, adapter in [*FAMILIES.items(), ("generic", GENERIC)]:
        sampling = ["prefix"] * adapter.supports_prefix + ["none"]
        logprobs = ["prefix"] * adapter.supports_prefix + ["vision"] * adapter.supports_feature_sharing + ["none"]
        tiny = f"tiny-{family}" if f"tiny-{family}" in names else "-"
        types = ", ".join(adapter.model_types) or "any other AutoModelForImageTextToText"
        rows.append((family, types, ", ".join(sampling), ", ".join(logprobs), tiny))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    typer.echo("\nfamilies (sharing modes: prefix = prompt encoded once per group, vision = images once; exact)")
    for row in rows:
        typer.echo("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip())


# Failures a user can fix (bad names, missing files, unloadable models): one line, exit code 2.
_USER_ERRORS = (ValueError, OSError, RuntimeError, ImportError)
_ENGINE_HELP = "Rollout engine: hf (the model itself) or vllm (a vLLM server from .venv-vllm: make vllm-env)."
# The shipped study presets, read from the package's presets folder (the list is the folder).
_PRESETS = ", ".join(sorted(p.stem for p in (Path(__file__).parent / "study" / "presets").glob("*.yaml")))
_TASK_HELP = "counting, multiple_choice, short_answer, numeric, math, or package.module:ClassName."


def _pairs(items: List[str], option: str) -> dict:
    """KEY=VALUE items as a dict, values read as YAML (true, 0.01, [a, b])."""
    import yaml

    pairs = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            _fail(ValueError(f"{option} {item!r} must look like KEY=VALUE"))
        pairs[key.strip()] = yaml.safe_load(value) if value.strip() else None
    return pairs


def _task(name: str, options: List[str]):
    from .tasks import get_task

    try:
        return get_task(name, _pairs(options, "--task-option"))
    except _USER_ERRORS as exc:
        _fail(exc)


def _eval_options(
    images, holdout, batch_size, max_new_tokens, device, task, task_option, column, engine, seed=0, tools=(), turns=2
):
    """The options `assess` and `eval` share, as the library takes them (`turns`: with `tools` only)."""
    from .evaluation.records import EvalOptions

    return EvalOptions(
        holdout=holdout,
        images=images,
        task=_task(task, task_option),
        columns=_pairs(column, "--column"),
        batch_size=batch_size,
        max_new_tokens=max_new_tokens,
        device=device,
        engine=engine,
        seed=seed,
        tools=tuple(tools),
        max_turns=turns if tools else 1,
    )


@app.command(epilog="Example: vlm-grpo assess --model lab-base --data lab-clevr --n 50 --num-generations 4")
def assess(
    model: str = typer.Option(..., "--model", help="Registered name, saved model folder, or hub id."),
    data: str = typer.Option(
        ..., "--data", help="Data set: lab-clevr, lab-superclevr, a .jsonl/.parquet path, or a hub id."
    ),
    styles: str = typer.Option(
        "default,r1v", "--styles", help="Comma-separated prompt styles: default, r1v, r1v_eval."
    ),
    n: int = typer.Option(200, "--n", help="Held-out samples (prompts)."),
    num_generations: int = typer.Option(8, "--num-generations", help="G: samples per prompt, as in training."),
    temperature: float = typer.Option(1.0, "--temperature", help="Sampling temperature of training."),
    out: Path = typer.Option(Path("runs/assess"), "--out", help="Folder for assessment.json and records.jsonl."),
    images: Optional[str] = typer.Option(None, "--images", help="Root folder for relative image paths."),
    holdout: int = typer.Option(
        1000, "--holdout", help="Rows of a lab set held out from training (the rows assessed)."
    ),
    max_new_tokens: int = typer.Option(50, "--max-new-tokens"),
    batch_size: int = typer.Option(64, "--batch-size", help="Completions generated per batch."),
    device: str = typer.Option("auto", "--device"),
    seed: int = typer.Option(0, "--seed"),
    task: str = typer.Option("counting", "--task", help=_TASK_HELP),
    task_option: List[str] = typer.Option([], "--task-option", help="KEY=VALUE of the task's options; repeat."),
    column: List[str] = typer.Option([], "--column", help="FIELD=COLUMN, e.g. question=problem; repeat."),
    engine: str = typer.Option("hf", "--engine", help=_ENGINE_HELP),
    prompts_per_step: int = typer.Option(
        4, "--prompts-per-step", help="B of the planned training: picks the measured map's cell."
    ),
) -> None:
    """Measure a base model's format rate and learning-signal odds before training, per prompt style."""
    from rich.console import Console
    from rich.padding import Padding
    from rich.text import Text

    from .evaluation.assess import advice_lines, assessment_table
    from .evaluation.assess import assess as run_assess
    from .training.setup import show_only_slow_bars

    show_only_slow_bars()
    try:
        result = run_assess(
            model,
            data,
            styles,
            n,
            num_generations,
            temperature,
            out,
            _eval_options(images, holdout, batch_size, max_new_tokens, device, task, task_option, column, engine, seed),
            prompts_per_step=prompts_per_step,
        )
    except _USER_ERRORS as exc:
        _fail(exc)
    console = Console()
    console.print(assessment_table(result))
    for indent, line in advice_lines(result):
        console.print(Padding(Text(line), (0, 0, 0, indent)))
    console.print(f"wrote {out / 'assessment.json'} and {out / 'records.jsonl'}", highlight=False)


@app.command(
    "eval",
    epilog="Example: vlm-grpo eval --model runs/smoke/checkpoint-3 --data lab-clevr --data lab-superclevr --n 50",
)
def eval_command(
    model: List[str] = typer.Option(..., "--model", help="Checkpoint folder or model name; repeat for several."),
    data: List[str] = typer.Option(..., "--data", help="Data set; repeat: the first is in-domain, the rest transfer."),
    style: str = typer.Option(
        "default", "--style", help="Prompt style: default, r1v or r1v_eval (R1-V's evaluation prompt)."
    ),
    n: int = typer.Option(200, "--n", help="Held-out samples per data set."),
    out: Path = typer.Option(Path("runs/eval"), "--out", help="Folder for records.jsonl and summary.json."),
    temperature: Optional[float] = typer.Option(
        None, "--temperature", help="Sample at this temperature (default: greedy)."
    ),
    images: Optional[str] = typer.Option(None, "--images", help="Root folder for relative image paths."),
    holdout: int = typer.Option(1000, "--holdout", help="Rows of a lab set held out from training."),
    max_new_tokens: int = typer.Option(50, "--max-new-tokens"),
    batch_size: int = typer.Option(32, "--batch-size"),
    device: str = typer.Option("auto", "--device"),
    task: str = typer.Option("counting", "--task", help=_TASK_HELP),
    task_option: List[str] = typer.Option([], "--task-option", help="KEY=VALUE of the task's options; repeat."),
    column: List[str] = typer.Option([], "--column", help="FIELD=COLUMN, e.g. question=problem; repeat."),
    engine: str = typer.Option("hf", "--engine", help=_ENGINE_HELP),
    tools: List[str] = typer.Option([], "--tool", help="A tool the model may call (crop, zoom, pkg.mod:fn); repeat."),
    max_turns: int = typer.Option(2, "--max-turns", help="Most assistant turns per answer, with --tool."),
) -> None:
    """Score checkpoints in-domain and on transfer sets (both scorings, generalization ratio)."""
    from rich.console import Console

    from .evaluation.final_eval import eval_table, evaluate_models
    from .training.setup import show_only_slow_bars

    show_only_slow_bars()
    try:
        summary = evaluate_models(
            model,
            data,
            style,
            n,
            out,
            temperature=temperature,
            options=_eval_options(
                images,
                holdout,
                batch_size,
                max_new_tokens,
                device,
                task,
                task_option,
                column,
                engine,
                0,
                tools,
                max_turns,
            ),
        )
    except _USER_ERRORS as exc:
        _fail(exc)
    Console().print(eval_table(summary))
    typer.echo(f"wrote {out / 'summary.json'} and {out / 'records.jsonl'}")


@app.command(
    context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
    epilog="Example: vlm-grpo study --preset tiny --seeds 1 --jobs 2 --out runs/study-tiny max_completion_length=16",
)
def study(
    overrides: Optional[List[str]] = typer.Argument(None, help="key=value overrides for every run (dots for nesting)."),
    preset: str = typer.Option("seed", "--preset", help=f"Shipped preset ({_PRESETS}) or a .yaml path."),
    seeds: Optional[int] = typer.Option(None, "--seeds", help="Seeds per condition (default: the preset's)."),
    steps: Optional[int] = typer.Option(None, "--steps", help="Training steps of every run (default: the preset's)."),
    out: Optional[Path] = typer.Option(None, "--out", help="Study folder (default: runs/study-<preset>)."),
    model: Optional[str] = typer.Option(None, "--model", help="Base model of every run (default: the preset's)."),
    n: Optional[int] = typer.Option(
        None,
        "--n",
        help="Held-out samples per data set in the final evaluation "
        "(default: the preset's; data.eval_size=N sets the evaluations during training).",
    ),
    threshold: Optional[float] = typer.Option(None, "--threshold", help="In-domain accuracy for steps-to-threshold."),
    jobs: int = typer.Option(1, "--jobs", help="Runs trained side by side, each on a share of the CPU threads."),
) -> None:
    """Train conditions x seeds at one step budget (resumable), evaluate all alike, write study.json/.md."""
    from .study.runner import StudyInterrupted, run_study

    try:
        result = run_study(preset, seeds, steps, out, model, list(overrides or []), n, threshold, jobs=jobs)
    except StudyInterrupted as exc:
        typer.secho(f"interrupted: {exc}", fg=typer.colors.YELLOW, err=True)
        raise typer.Exit(code=130) from None
    except (*_USER_ERRORS, FloatingPointError) as exc:
        _fail(exc)
    typer.echo(
        f"runs: {len(result['ran'])} trained, {len(result['resumed'])} resumed, "
        f"{len(result['skipped'])} already finished"
    )
    typer.echo(f"wrote {result['out']}/study.json, study.md and report/")


@app.command(epilog="Example: vlm-grpo report runs/study-tiny --out runs/study-tiny/report2")
def report(
    run_dirs: Optional[List[Path]] = typer.Argument(
        None, help="Run folders (each with metrics.jsonl), or a study folder (the --out of `vlm-grpo study`)."
    ),
    study: Optional[Path] = typer.Option(
        None, "--study", help="study.json from `vlm-grpo study` (default: a study folder's own)."
    ),
    assessment: Optional[Path] = typer.Option(None, "--assessment", help="assessment.json from `vlm-grpo assess`."),
    out: Path = typer.Option(Path("runs/report"), "--out", help="Folder for report.md and figures."),
) -> None:
    """Figures and tables from run folders or a study folder, a study and a baseline assessment."""
    from .study.report import report_inputs, write_report

    for label, path in (("--study", study), ("--assessment", assessment)):
        if path is not None and not path.is_file():
            _fail(FileNotFoundError(f"{label} file {path} does not exist"))
    try:
        runs, study = report_inputs(list(run_dirs or []), study)
    except (ValueError, OSError) as exc:
        _fail(exc)
    if not runs and study is None and assessment is None:
        _fail(ValueError("nothing to report: give run folders, a study folder, --study or --assessment"))
    try:
        path = write_report(runs, out, study_json=study, assessment_json=assessment)
    except (ValueError, OSError, KeyError) as exc:
        _fail(exc)
    typer.echo(f"wrote {path}")


lab_app = typer.Typer(
    no_args_is_help=True, help="The embedded counting lab: tiny models that reproduce the cold start."
)
app.add_typer(lab_app, name="lab")


@lab_app.command("demo", epilog="Example: vlm-grpo lab demo --out runs/lab-demo --steps 20")
def lab_demo(
    out: Path = typer.Option(Path("runs/lab-demo"), "--out", help="Output folder (re-running resumes)."),
    steps: Optional[int] = typer.Option(None, "--steps", help="Training steps per run (default: the preset's)."),
    seeds: int = typer.Option(1, "--seeds", help="Seeds per condition."),
    n: int = typer.Option(200, "--n", help="Held-out scenes per evaluation."),
) -> None:
    """Assess both lab bases, train with and without injection, evaluate, and write the report."""
    from .lab.demo import run_demo
    from .training.setup import show_only_slow_bars

    show_only_slow_bars()
    try:
        report_path = run_demo(out, steps, seeds, n)
    except _USER_ERRORS as exc:
        _fail(exc)
    typer.echo(f"report: {report_path}")


@lab_app.command(
    "pretrain", epilog="Example: vlm-grpo lab pretrain runs/my-base --digit-share 0.15 --minutes 5 --threads 2"
)
def lab_pretrain(
    out: Path = typer.Argument(..., help="Folder to write the base model to."),
    digit_share: float = typer.Option(
        ...,
        "--digit-share",
        help="Share of bare-digit answers under the plain prompt: the cold-start dial "
        "(lab-base 0.15, lab-base-cold 0.025).",
    ),
    minutes: Optional[float] = typer.Option(30.0, "--minutes", help="Wall-time cap."),
    steps: Optional[int] = typer.Option(
        1800, "--steps", help="Step budget (the shipped bases: 1800; whichever ends first)."
    ),
    seed: int = typer.Option(0, "--seed"),
    threads: int = typer.Option(1, "--threads", help="CPU threads (two bases train side by side on two cores)."),
) -> None:
    """Rebuild a lab base model from scratch by supervised fine-tuning on rendered scenes."""
    import torch

    from .lab.pretrain import pretrain
    from .training.setup import show_only_slow_bars

    show_only_slow_bars()
    torch.set_num_threads(threads)
    try:
        path = pretrain(out, digit_share, minutes=minutes, steps=steps, seed=seed)
    except _USER_ERRORS as exc:
        _fail(exc)
    typer.echo(f"saved: {path}")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
