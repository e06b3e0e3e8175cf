"""The `vlm-grpo` command: parsing only; the work is done by the library."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="GRPO for vision-language models, with guidance injection for the cold start.")


def _fail(exc: Exception) -> None:
    typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code=2)


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def train(
    config: Optional[Path] = typer.Argument(None, help="YAML preset (only what differs from the defaults)."),
    overrides: Optional[List[str]] = typer.Argument(None, help="key=value overrides; dots for nesting (injection.mode=random)."),
) -> None:
    """Train with GRPO: `vlm-grpo train CONFIG.yaml [key=value ...]`."""
    from .config import ConfigError, load_config

    args = list(overrides or [])
    if config is not None and "=" in str(config) and not Path(config).exists():
        args.insert(0, str(config))
        config = None
    try:
        cfg = load_config(config, args)
    except ConfigError as exc:
        _fail(exc)
    from .trainer import train as run_training

    try:
        summary = run_training(cfg)
    except (ValueError, FileNotFoundError, RuntimeError, FloatingPointError) as exc:
        _fail(exc)
    typer.echo(f"done: {summary['steps']} steps in {summary['wall_s']:.1f} s; outputs in {cfg.output_dir}")


@app.command()
def models() -> None:
    """List the registered model names."""
    from .models import registered_models

    for name in registered_models():
        typer.echo(name)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
