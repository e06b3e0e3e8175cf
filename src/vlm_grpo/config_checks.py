"""Validation of a run configuration, in one place: allowed values, ranges and combinations, every
section's own `check`, and the checks modules register for the names their registries hold
(`register_check`); all reported at once."""

from __future__ import annotations

import typing

from .config_sections import sections
from .errors import ConfigError
from .registry import Registry

if typing.TYPE_CHECKING:
    from .config import TrainConfig

# Numerical precision (training/precision.py applies it).
PRECISIONS = ("auto", "fp32", "bf16-mixed", "bf16-true", "fp16-mixed")

MOVED = {
    "dtype": "precision (float32 -> fp32, bfloat16 -> bf16-true, float16 -> fp16-mixed)",
    "injection.off_policy": "off_policy",
    "injection.luffy_gamma": "luffy_gamma",
    "injection.group_stats": "group_stats",
    "injection.schedule": "injection.rate.schedule",
    "injection.initial_rate": "injection.rate.initial",
    "injection.final_rate": "injection.rate.final",
    "injection.decay_fraction": "injection.rate.decay_fraction",
    "injection.adaptive_low": "injection.rate.low",
    "injection.adaptive_high": "injection.rate.high",
    "injection.prefix_ratio_initial": "injection.prefix_ratio.initial",
    "injection.prefix_ratio_final": "injection.prefix_ratio.final",
    "sft.schedule": "sft.coef.schedule",
    "sft.initial_coef": "sft.coef.initial",
    "sft.final_coef": "sft.coef.final",
    "sft.decay_fraction": "sft.coef.decay_fraction",
    "sft.adaptive_low": "sft.coef.low",
    "sft.adaptive_high": "sft.coef.high",
    "dynamic_sampling": "dynamic_sampling.enabled",
    "dynamic_sampling_max_batches": "dynamic_sampling.max_batches",
    "tools": "tools.names",
    "max_turns": "tools.max_turns",
    "tool_use": "tools (tool_use.KEY is now tools.KEY)",
    "vllm_importance_sampling_cap": "vllm_importance_sampling_clip_max",
    "remedy_options": "the remedy's own section (remedy_options.NAME.KEY is now NAME.KEY)",
}
"""Keys that moved, and where: an old key stops with this message instead of meaning something silently.
Where the new place is one key, `config.upgraded` moves a config.yaml written before (a study's run
folders) to it."""

MOVED_NOTES = {
    "injection.prefix_ratio_initial": "with injection.prefix_ratio.schedule=linear",
    "injection.prefix_ratio_final": "with injection.prefix_ratio.schedule=linear",
}
"""What else the new key needs, where it needs something."""

COLUMN_FIELDS = ("image", "question", "answer", "choices", "conversation", "video")
"""The fields `data.columns` maps to a data set's columns (`data/layouts.py` reads them)."""

RENAMED_VALUES = {("loss_type", "token_mean"): "bnpo", ("loss_type", "seq_mean"): "grpo"}
"""Values that now go by TRL's name: the old one stops with a message naming the new one (no alias)."""

# Keys whose values name registry entries (loss_type, scale_rewards, prompt.style, rollout_engine, ...)
# are checked by the registries' modules (`check_named`).
CHOICES: dict[str, tuple[str, ...]] = {
    "precision": PRECISIONS,
    "device": ("auto", "cpu", "cuda"),
    "fsdp": ("none", "full_shard", "shard_grad_op"),
    "vllm_importance_sampling_mode": ("token_truncate", "token_mask", "sequence_truncate", "sequence_mask"),
    "importance_sampling_level": ("token", "sequence"),
    "logprob_sharing": ("auto", "prefix", "vision", "none"),
    "generation_sharing": ("auto", "prefix", "none"),
    "lr_scheduler_type": ("linear", "cosine", "constant"),
    "off_policy": ("ratio", "luffy"),
    "group_stats": ("all", "sampled"),
    "data.on_bad_sample": ("skip", "error"),
}


Need = typing.Callable[[bool, str], None]
Check = typing.Callable[["TrainConfig", Need], None]

CHECKS: Registry[Check] = Registry("configuration check")
"""Checks that modules above this layer register, by name: that a config's names are in their
registries (loss_type in `core.losses.LOSSES`, a remedy name in `REMEDIES`, ...), so a plug-in's
entries are as valid as the shipped ones. `validate` runs them with the rest."""


def register_check(name: str, check: Check, replace: bool = False) -> Check:
    """Add `check(cfg, need)` to every validation (`need(ok, message)` records a violation)."""
    CHECKS.register(name, check, replace)
    return check


def check_named(key: str, registry: Registry) -> None:
    """Register the check that the value of `key` (dotted) is one of `registry`'s names."""

    def check(cfg: TrainConfig, need: Need) -> None:
        value = _get(cfg, key)
        need(value in registry, f"{key}={value!r} is not one of {', '.join(registry.names())}")

    register_check(key, check)


def validate(cfg: TrainConfig) -> TrainConfig:
    """Check every constraint; raise one ConfigError listing all violations."""
    errors: list[str] = []

    def need(ok: bool, message: str) -> None:
        if not ok and message not in errors:
            errors.append(message)

    checks = (
        _check_algorithm,
        _check_resources,
        _check_precision,
        _check_engine,
        _check_prompt,
    )
    for check in checks:
        check(cfg, need)
    sections()  # the built-in owners loaded: their sections and checks are registered
    for section in cfg.sections.values():
        if hasattr(section, "check"):
            section.check(cfg, need)
    for _, check in CHECKS.items():
        check(cfg, need)
    for sink in cfg.report_to:
        need(sink in ("tensorboard", "wandb"), f"report_to entry {sink!r} is not one of tensorboard, wandb")
    if errors:
        raise ConfigError("invalid configuration:\n  - " + "\n  - ".join(errors))
    return cfg


def _check_algorithm(cfg: TrainConfig, need: Need) -> None:
    for key, allowed in CHOICES.items():
        value = _get(cfg, key)
        need(value in allowed, f"{key}={value!r} is not one of {', '.join(allowed)}")
    _check_loss(cfg, need)
    need(
        cfg.num_generations >= 2,
        f"num_generations={cfg.num_generations}: GRPO needs at least 2 completions per prompt to compare",
    )
    for name in (
        "prompts_per_step",
        "num_iterations",
        "max_steps",
        "micro_batch_size",
        "max_completion_length",
        "save_steps",
        "logging_steps",
    ):
        need(getattr(cfg, name) >= 1, f"{name}={getattr(cfg, name)} must be >= 1")
    mb = cfg.effective_minibatch_size
    need(
        cfg.rows_per_step % mb == 0,
        f"minibatch_size={mb} must divide prompts_per_step x num_generations = {cfg.rows_per_step}",
    )
    need(
        mb % cfg.micro_batch_size == 0 or cfg.micro_batch_size > mb,
        f"micro_batch_size={cfg.micro_batch_size} must divide minibatch_size={mb}",
    )
    for name in ("micro_batch_tokens", "logprob_chunk_tokens"):
        need(getattr(cfg, name) >= 0, f"{name}={getattr(cfg, name)} must be >= 0 (0: off / automatic)")
    need(
        not cfg.micro_batch_tokens or (cfg.fsdp == "none" and not cfg.zero_stage),
        f"micro_batch_tokens={cfg.micro_batch_tokens} with fsdp or zero_stage: their ranks must run the same "
        "number of backward passes; use micro_batch_size",
    )
    need(cfg.temperature > 0, f"temperature={cfg.temperature} must be > 0 (GRPO samples; use eval for greedy)")
    need(0 < cfg.top_p <= 1, f"top_p={cfg.top_p} must be in (0, 1]")
    need(cfg.learning_rate > 0, f"learning_rate={cfg.learning_rate} must be > 0")
    need(0 <= cfg.warmup_ratio < 1, f"warmup_ratio={cfg.warmup_ratio} must be in [0, 1)")
    need(
        cfg.reward_weights is None or len(cfg.reward_weights) == len(cfg.reward_funcs),
        f"reward_weights has {len(cfg.reward_weights or [])} entries for {len(cfg.reward_funcs)} reward_funcs",
    )
    need(bool(cfg.reward_funcs), "reward_funcs is empty: name at least one reward")


def _check_loss(cfg: TrainConfig, need: Need) -> None:
    """The loss's own settings, beside the choices; `core.losses` checks that loss_type is registered."""
    for (key, value), new in RENAMED_VALUES.items():
        need(_get(cfg, key) != value, f"{key}={value} is now {key}={new} (TRL's name for the same loss)")
    need(
        cfg.loss_type != "cispo" or cfg.epsilon_high is not None,
        "loss_type=cispo caps the ratio itself at epsilon_high: set it (ScaleRL recommends epsilon_high=5.0)",
    )
    need(cfg.epsilon > 0, f"epsilon={cfg.epsilon} must be > 0")
    need(cfg.epsilon_high is None or cfg.epsilon_high > 0, f"epsilon_high={cfg.epsilon_high} must be > 0")
    upper = 1 + (cfg.epsilon_high if cfg.epsilon_high is not None else cfg.epsilon)
    need(cfg.delta is None or cfg.delta > upper, f"delta={cfg.delta} must be above 1 + epsilon_high = {upper:g}")
    need(cfg.beta >= 0, f"beta={cfg.beta} must be >= 0")
    need(cfg.luffy_gamma > 0, f"luffy_gamma={cfg.luffy_gamma} must be > 0")
    for name in ("sapo_temperature_pos", "sapo_temperature_neg"):
        need(getattr(cfg, name) > 0, f"{name}={getattr(cfg, name)} must be > 0")


def _check_resources(cfg: TrainConfig, need: Need) -> None:
    unknown = sorted(set(cfg.data.columns) - set(COLUMN_FIELDS))
    need(not unknown, f"data.columns names {', '.join(unknown)}: only {', '.join(COLUMN_FIELDS)} can be mapped")
    need(
        cfg.data.eval_holdout >= 0 and cfg.data.eval_size >= 1, "data.eval_holdout must be >= 0 and data.eval_size >= 1"
    )
    need(cfg.data.num_workers >= 0, f"data.num_workers={cfg.data.num_workers} must be >= 0 (0: decode when drawn)")
    need(
        not (cfg.gradient_checkpointing and cfg.logprob_sharing == "prefix"),
        "gradient_checkpointing=true turns the KV cache off, which logprob_sharing=prefix needs: "
        "set logprob_sharing=vision (each image encoded once) or none",
    )
    need(
        not (cfg.skip_zero_advantage_groups and cfg.beta > 0),
        f"skip_zero_advantage_groups=true needs beta=0 (beta={cfg.beta}): skipped rows would lose their KL term",
    )
    need(cfg.zero_stage in (0, 2, 3), f"zero_stage={cfg.zero_stage} is not one of 0, 2, 3")
    need(cfg.fsdp == "none" or not cfg.zero_stage, f"fsdp={cfg.fsdp} and zero_stage={cfg.zero_stage}: pick one")
    for name, value in (("fsdp", cfg.fsdp), ("zero_stage", cfg.zero_stage)):
        if value in ("none", 0):
            continue
        need(
            not cfg.skip_zero_advantage_groups,
            f"{name}={value} needs skip_zero_advantage_groups=false: a sharded forward is a collective, "
            "so every rank must run the same passes",
        )
        need(not cfg.lora.enabled, f"{name}={value} with lora.enabled=true is not supported: use one or the other")
    need(
        cfg.lora.enabled or not cfg.lora.load_in_4bit,
        "lora.load_in_4bit=true needs lora.enabled=true: 4-bit base weights cannot be trained directly",
    )
    need(cfg.lora.r >= 1 and cfg.lora.alpha >= 1, f"lora.r={cfg.lora.r} and lora.alpha={cfg.lora.alpha} must be >= 1")


def _check_precision(cfg: TrainConfig, need: Need) -> None:
    if cfg.precision not in PRECISIONS:
        return  # CHOICES reports the unknown name
    name = cfg.precision
    need(
        not (name == "bf16-true" and cfg.fsdp != "none"),
        f"precision=bf16-true with fsdp={cfg.fsdp} is not supported: use precision=bf16-mixed, "
        "which under FSDP keeps 1/N float32 shards and gathers bfloat16 weights for compute",
    )
    need(
        not (name == "fp16-mixed" and (cfg.fsdp != "none" or cfg.zero_stage)),
        "precision=fp16-mixed is supported without sharding only: use precision=bf16-mixed with fsdp or zero_stage",
    )


def _get(cfg: typing.Any, dotted: str) -> typing.Any:
    for part in dotted.split("."):
        cfg = getattr(cfg, part)
    return cfg


def _check_engine(cfg: TrainConfig, need: Need) -> None:
    low, high = cfg.vllm_importance_sampling_clip_min, cfg.vllm_importance_sampling_clip_max
    need(high is None or high >= 1, f"vllm_importance_sampling_clip_max={high} must be >= 1")
    need(low is None or 0 <= low <= 1, f"vllm_importance_sampling_clip_min={low} must be in [0, 1]")


def _check_prompt(cfg: TrainConfig, need: Need) -> None:
    if cfg.prompt.style == "custom":
        need(
            bool(cfg.prompt.template) and "{question}" in cfg.prompt.template,
            "prompt.style=custom needs prompt.template containing {question}",
        )


def check_demonstration_template(cfg: TrainConfig, need: Need, what: str) -> None:
    """A remedy that writes demonstrations under prompt.style=custom needs to know how one is written."""
    if cfg.prompt.style == "custom":
        need(
            (cfg.prompt.demonstration or "").count("{answer}") == 1,
            f"{what} with prompt.style=custom needs prompt.demonstration containing {{answer}}",
        )


def sharded(cfg: TrainConfig) -> str | None:
    """`fsdp=...` or `zero_stage=...` when the run shards the model over processes, else None."""
    if cfg.fsdp != "none":
        return f"fsdp={cfg.fsdp}"
    return f"zero_stage={cfg.zero_stage}" if cfg.zero_stage else None
