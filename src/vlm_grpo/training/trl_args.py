"""TRL's `GRPOConfig` fields read as this project's run configuration, so a TRL user's settings port as
they are: `from_trl` turns each field into `TrainConfig` keys with TRL's meaning, or stops with one line
naming what this project does instead (the tables are `trl_fields`).

A config that sizes its batches with TRL's keys (`BATCH_KEYS`) is read as a TRL script's: what it leaves
out takes TRL's default where this project's differs (`TRL_DEFAULTS`), and its step counts are TRL's
optimizer updates. Without them, the keys both share keep this project's defaults.
"""

from __future__ import annotations

import dataclasses
import math
import os
from typing import Any
from urllib.parse import urlparse

from ..config import TrainConfig
from ..errors import ConfigError
from .trl_fields import BATCH_KEYS, IGNORED, ONLY_DEFAULT, TRL_DEFAULTS


def from_trl(settings: dict[str, Any]) -> dict[str, Any]:
    """`settings` with TRL's fields turned into `TrainConfig` keys with TRL's meaning; a field with no
    counterpart stops with one line naming what this project does instead."""
    out = dict(settings)
    for name in [k for k in out if k in IGNORED]:
        del out[name]
    for name in [k for k in out if k in ONLY_DEFAULT]:
        allowed, why = ONLY_DEFAULT[name]
        if (value := out.pop(name)) not in allowed:
            raise ConfigError(f"{name}={value!r} is not supported: {why}")
    _shared_values(out)
    updates = _batches(out) if any(k in out for k in BATCH_KEYS) else 0
    if updates:
        _trl_script(out, updates)
    _precision(out)
    _engine(out)
    _logging(out, updates or 1)
    _training(out)
    return out


def _put(out: dict[str, Any], key: str, value: Any, source: str) -> None:
    """Set `key` from TRL's `source`; one setting given two ways, differently, is refused (no guessing)."""
    if key in out and out[key] != value:
        raise ConfigError(f"{source} sets {key}={value!r}, but {key}={out[key]!r} is given too: give one")
    out[key] = value


def _put_in(out: dict[str, Any], section: str, key: str, value: Any, source: str) -> None:
    given = out.get(section) or {}
    inner = dataclasses.asdict(given) if dataclasses.is_dataclass(given) else dict(given)
    _put(inner, key, value, source)
    out[section] = inner


def _shared_values(out: dict[str, Any]) -> None:
    """TRL's values of shared keys that this config spells otherwise."""
    if "output_dir" in out and out["output_dir"] is None:
        out["output_dir"] = "trainer_output"
    if out.get("fsdp", "") in (None, ""):
        out.pop("fsdp", None)
    if "vllm_importance_sampling_cap" in out:  # TRL's deprecated name; None there: clip_max's default
        cap = out.pop("vllm_importance_sampling_cap")
        if cap is not None:
            _put(out, "vllm_importance_sampling_clip_max", cap, "vllm_importance_sampling_cap")
    if isinstance(out.get("scale_rewards"), bool):
        out["scale_rewards"] = "group" if out["scale_rewards"] else "none"
    if "report_to" in out:
        sinks = [out["report_to"]] if isinstance(out["report_to"], str) else list(out["report_to"] or [])
        if "all" in sinks:
            raise ConfigError("report_to='all' is not supported: name the sinks (tensorboard, wandb)")
        out["report_to"] = [s for s in sinks if s != "none"]
    if "max_steps" in out and isinstance(out["max_steps"], int) and out["max_steps"] <= 0:
        raise ConfigError(
            f"max_steps={out['max_steps']}: TRL then trains num_train_epochs over the data set; this trainer "
            "counts steps: set max_steps (one step draws prompts_per_step prompts)"
        )
    if "num_train_epochs" in out:
        out.pop("num_train_epochs")
        if "max_steps" not in out:
            raise ConfigError(
                "num_train_epochs is not supported: this trainer counts steps; set max_steps "
                "(an epoch of N rows is N / prompts_per_step steps)"
            )


def _batches(out: dict[str, Any]) -> int:
    """TRL's batch keys as rows per step, per update and per pass; returns the optimizer updates per
    step (TRL counts its steps in them)."""
    given = [k for k in BATCH_KEYS if k in out]
    for ours in ("prompts_per_step", "micro_batch_size", "minibatch_size"):
        if ours in out:
            raise ConfigError(f"{ours} and TRL's {', '.join(given)} both size the step: give one set")
    world = int(os.environ.get("WORLD_SIZE", "1"))
    per_device = out.pop("per_device_train_batch_size", 8)
    accumulation = out.pop("gradient_accumulation_steps", 1)
    per_generation, generation = out.pop("steps_per_generation", None), out.pop("generation_batch_size", None)
    if per_generation is not None and generation is not None:
        raise ConfigError("steps_per_generation and generation_batch_size both set the generation batch: give one")
    rows = generation or per_device * world * (per_generation or accumulation)
    groups = out.get("num_generations", TrainConfig.num_generations)
    if rows % groups:
        raise ConfigError(f"the generation batch of {rows} rows must divide by num_generations={groups}")
    minibatch = per_device * accumulation * world
    out.update(prompts_per_step=rows // groups, micro_batch_size=per_device, minibatch_size=minibatch)
    iterations = out.get("num_iterations", TRL_DEFAULTS["num_iterations"])
    return max(1, iterations * rows // minibatch)


def _trl_script(out: dict[str, Any], updates: int) -> None:
    """A config sized by TRL's batch keys: TRL's defaults for what it leaves out, and its step counts,
    which TRL counts in optimizer updates, as steps of this trainer (`updates` updates each)."""
    if "max_steps" not in out:
        raise ConfigError("max_steps is required: this trainer counts steps, not num_train_epochs")
    if out["max_steps"] % updates:
        raise ConfigError(
            f"max_steps={out['max_steps']} counts optimizer updates, as TRL does; a step here is one generation "
            f"batch and its {updates} updates: give a multiple of {updates}"
        )
    for key, value in TRL_DEFAULTS.items():
        if key == "log_completions_steps" and "log_completions" in out:
            continue
        if key == "warmup_ratio" and "warmup_steps" in out:
            continue
        out.setdefault(key, value)
    out["max_steps"] //= updates


def _precision(out: dict[str, Any]) -> None:
    bf16, fp16 = out.pop("bf16", None), out.pop("fp16", None)
    if bf16 and fp16:
        raise ConfigError("bf16 and fp16 are both on: choose one (precision=bf16-mixed or fp16-mixed)")
    if bf16:
        _put(out, "precision", "bf16-mixed", "bf16=True")
    elif fp16:
        _put(out, "precision", "fp16-mixed", "fp16=True")
    elif bf16 is False:
        _put(out, "precision", "fp32", "bf16=False")
    if out.pop("use_cpu", False):
        _put(out, "device", "cpu", "use_cpu=True")


def _engine(out: dict[str, Any]) -> None:
    """TRL's vLLM keys as the `vllm` section and the engine's importance weights."""
    use_vllm = out.pop("use_vllm", None)
    if use_vllm is not None:
        _put(out, "rollout_engine", "vllm" if use_vllm else "hf", f"use_vllm={use_vllm}")
    if (vllm_mode := out.pop("vllm_mode", None)) is not None:
        if vllm_mode not in ("server", "colocate"):
            raise ConfigError(f"vllm_mode={vllm_mode!r} is not one of server, colocate")
        _put_in(out, "vllm", "mode", vllm_mode, f"vllm_mode={vllm_mode!r}")
    if (workers := out.pop("dataloader_num_workers", None)) is not None:
        _put_in(out, "data", "num_workers", workers, "dataloader_num_workers")
    if (url := out.pop("vllm_server_base_url", None)) is not None:
        parsed = urlparse(url)
        _put_in(out, "vllm", "host", parsed.hostname, "vllm_server_base_url")
        _put_in(out, "vllm", "port", parsed.port or 80, "vllm_server_base_url")
    for trl_key, key in (
        ("vllm_server_host", "host"),
        ("vllm_server_port", "port"),
        ("vllm_server_timeout", "startup_timeout"),
        ("vllm_gpu_memory_utilization", "gpu_memory_utilization"),
        ("vllm_tensor_parallel_size", "tensor_parallel_size"),
        ("vllm_max_model_length", "max_model_len"),
    ):
        if (value := out.pop(trl_key, None)) is not None:
            _put_in(out, "vllm", key, value, trl_key)


def _logging(out: dict[str, Any], updates: int) -> None:
    """Logging, saving and evaluation cadence; TRL counts in optimizer updates (`updates` per step here),
    rounded up to whole steps: when a line or checkpoint is written changes no trained weight."""
    for key in ("logging_steps", "save_steps", "eval_steps"):
        if key in out and out[key] is not None:
            value = out[key]
            if isinstance(value, float) and (value < 1 or not value.is_integer()):
                raise ConfigError(f"{key}={value}: a share of the run is not supported here; give a number of steps")
            out[key] = max(1, math.ceil(int(value) / updates))
    strategy, every = out.pop("eval_strategy", None), out.pop("eval_steps", None)
    if strategy == "steps":
        _put_in(
            out, "data", "eval_steps", every or out.get("logging_steps", TrainConfig.logging_steps), "eval_strategy"
        )
    elif strategy == "no" and every is None:
        _put_in(out, "data", "eval_steps", 0, "eval_strategy='no'")
    elif strategy is not None or every is not None:
        raise ConfigError(
            f"eval_strategy={strategy!r} with eval_steps={every!r}: this trainer evaluates every data.eval_steps "
            "steps: eval_strategy='steps' with eval_steps, or 'no'"
        )
    if (completions := out.pop("log_completions", None)) is not None:
        every_log = out.get("logging_steps", TrainConfig.logging_steps)
        _put(out, "log_completions_steps", every_log if completions else 0, f"log_completions={completions}")
    if (hidden := out.pop("disable_tqdm", None)) is not None:
        _put(out, "progress", not hidden, f"disable_tqdm={hidden}")
    if (hub := out.pop("hub_strategy", "end")) != "end":
        raise ConfigError(f"hub_strategy={hub!r} is not supported: push_to_hub uploads the final checkpoint ('end')")


def _training(out: dict[str, Any]) -> None:
    """The optimizer, its warm-up, the KL's correction, tool turns and resuming."""
    if (optim := out.pop("optim", "adamw_torch")) not in ("adamw_torch", "adamw_torch_fused"):
        raise ConfigError(f"optim={optim!r} is not supported: this trainer steps AdamW (optim='adamw_torch_fused')")
    if out.pop("use_bias_correction_kl", False) and out.get("beta", TrainConfig.beta) != 0:
        raise ConfigError(
            "use_bias_correction_kl=True is not supported with beta > 0: the KL term here is not multiplied by "
            "the importance ratio; pass use_bias_correction_kl=False"
        )
    if (turns := out.pop("max_tool_calling_iterations", None)) is not None:
        _put_in(out, "tools", "max_turns", turns + 1, "max_tool_calling_iterations")
    resume = out.pop("resume_from_checkpoint", None)
    if isinstance(resume, str):
        raise ConfigError(
            "resume_from_checkpoint=PATH is not supported: resume=True continues from output_dir's newest"
        )
    if resume:
        _put(out, "resume", True, "resume_from_checkpoint=True")
    if (warmup := out.pop("warmup_steps", None)) is not None:
        _put(out, "warmup_ratio", _warmup_ratio(out, warmup), f"warmup_steps={warmup}")


def _warmup_ratio(out: dict[str, Any], warmup: float) -> float:
    """TRL's warmup_steps as this config's ratio of the run's optimizer updates; the half-update margin
    keeps int(ratio x updates), which the schedule takes, from rounding one update short."""
    if isinstance(warmup, float) and warmup < 1:
        return warmup
    get = lambda key: out.get(key, getattr(TrainConfig, key))  # noqa: E731
    rows = get("prompts_per_step") * get("num_generations")
    updates = get("max_steps") * get("num_iterations") * (rows // (get("minibatch_size") or rows))
    return min(1.0, (int(warmup) + 0.5) / updates) if warmup else 0.0
