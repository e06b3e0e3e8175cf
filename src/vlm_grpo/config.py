"""Typed run configuration: defaults, YAML presets, ``key=value`` overrides, validation.

Defaults follow the study's appendix (clip 0.2, G = 8, 4 prompts per update, 4 GRPO epochs,
no KL, lr 1e-5, weight decay 0.01, 10 % warmup, grad-norm 1.0, 50 new tokens, T = 1.0,
top-p 1.0). Where TRL's ``GRPOConfig`` has the same key, the field carries TRL's name; a feature TRL
lacks is a section declared by the module that implements it (the rule: `config_sections`).
A preset holds only what differs from these defaults.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .config_checks import MOVED, MOVED_NOTES, validate
from .config_sections import DataConfig, LoraSettings, LossSettings, PromptConfig, Schedule
from .config_sections import sections as declared_sections
from .errors import ConfigError
from .registry import import_object


@dataclass
class TrainConfig(LossSettings):
    """A run: its own fields below, the loss's (`LossSettings`: loss_type, epsilon, epsilon_high, delta,
    importance_sampling_level, beta, sapo_temperature_*, off_policy, luffy_gamma) inherited, flat."""

    output_dir: str = "runs/grpo"
    """Folder for metrics, TensorBoard events, completions and checkpoints."""
    model: str = "tiny-qwen2-vl"
    """Policy: a local folder, a hub id, or a registered name (`vlm-grpo models` lists them)."""
    task: str = "counting"
    """What is asked and how answers are checked: counting | multiple_choice | short_answer | numeric |
    math (needs `vlm-grpo[math]`), a plug-in's task, or the user's `package.module:ClassName`."""
    task_options: dict[str, Any] = field(default_factory=dict)
    """Keyword options of the task: multiple_choice: shuffle_choices, seed, accept_choice_text;
    short_answer: max_words; numeric: rel_tol, abs_tol."""
    precision: str = "auto"
    """fp32 | bf16-mixed (fp32 weights and Adam state, bf16 autocast) | bf16-true (bf16 weights, fp32
    master weights in the optimizer) | fp16-mixed (fp32 weights, fp16 autocast, loss scaling) |
    auto (bf16-mixed on GPU, fp32 on CPU). Never bf16 weights updated in place: see training/precision.py."""
    device: str = "auto"
    """auto (cuda when available) | cpu | cuda."""
    trust_remote_code: bool = False
    """Allow a checkpoint's own Python code to run; off unless asked."""
    freeze_vision_tower: bool = False
    """Keep the vision encoder's weights fixed."""
    gradient_checkpointing: bool = False
    """Recompute activations in the backward pass to save memory (needs logprob_sharing=vision or none)."""
    fsdp: str = "none"
    """Shard weights, gradients and optimizer state over the processes (PyTorch FSDP2): `full_shard`
    (ZeRO-3-like), `shard_grad_op` (ZeRO-2-like) or `none` (every rank holds the whole model).
    An accelerate config with `distributed_type: FSDP` turns it on too. Needs 2+ processes."""
    zero_stage: int = 0
    """DeepSpeed ZeRO instead of FSDP: 2 partitions gradients and Adam moments, 3 the weights too;
    0: off. An accelerate config with `distributed_type: DEEPSPEED` sets it too. Needs 2+ processes."""
    max_pixels: int | None = None
    """Pixel budget per image; images are resized once at load time (None: the processor's own)."""
    seed: int = 0
    """Seed of sampling, data order and injection; a run is reproducible from it on CPU."""
    max_steps: int = 2000
    """Training steps; one step = one rollout batch and its `num_iterations` epochs of updates."""
    save_steps: int = 100
    """Write a checkpoint every N steps (and at the end)."""
    save_total_limit: int | None = None
    """Keep only the newest K checkpoints (None: keep all)."""
    resume: bool = False
    """Continue from the newest checkpoint in output_dir."""
    push_to_hub: bool = False
    """Upload the final checkpoint (weights, processor, model card) to the Hugging Face Hub at the end of
    the run; when the hub cannot be reached the run still ends, with the checkpoint kept on disk."""
    hub_model_id: str | None = None
    """The hub repository for push_to_hub, `user/name` or `name` (None: the output folder's name)."""

    num_generations: int = 8
    """G: completions sampled per prompt (TRL: num_generations)."""
    prompts_per_step: int = 4
    """Prompts (images and questions) per rollout batch: the study's num_experiences_per_update."""
    num_iterations: int = 4
    """GRPO epochs over each rollout batch (TRL: num_iterations)."""
    minibatch_size: int | None = None
    """Completion rows per optimizer step within an epoch (None: the whole batch, one update per epoch)."""
    micro_batch_size: int = 8
    """Completion rows per forward/backward; gradients accumulate up to minibatch_size."""
    micro_batch_tokens: int = 0
    """Tokens per forward/backward instead of a number of rows (0: off, micro_batch_size rows): a
    minibatch's rows, sorted by length, are grouped while rows x (longest completion, plus the prompt
    where the pass runs it again) stays within the budget, so long and short answers pad little. The
    loss is the same token or sequence mean whatever the grouping. One process, or several without
    fsdp / zero_stage."""
    logprob_chunk_tokens: int = 0
    """Completion tokens projected through the output head at once in the log-prob passes (0: as many
    as make 2^25 logits, about 220 at a 152k vocabulary); memory above the hidden states is one chunk's
    logits, recomputed in the backward pass."""
    use_reference_model: bool = False
    """Load the frozen reference even when beta = 0, to log the KL."""
    scale_rewards: str = "group"
    """Advantage scaling: group ((r - mean) / (std + 1e-4)) | none (r - mean, Dr. GRPO) | a registered
    scaling (`core.algo.register_advantage`)."""
    group_stats: str = "all"
    """Rows that enter the group mean/std of the advantages: `all` or `sampled` (demonstrations excluded)."""
    max_completion_length: int = 50
    """New tokens per sampled completion."""
    max_prompt_length: int | None = None
    """Longest prompt (image tokens included) to train on; longer ones are skipped or stop the run per
    data.on_bad_sample. Prompts are never truncated: cutting image tokens breaks the model's input."""
    temperature: float = 1.0
    """Sampling temperature; log-probs are computed at the same temperature."""
    top_p: float = 1.0
    """Nucleus sampling mass."""
    top_k: int = 0
    """Top-k sampling (0: off)."""
    logprob_sharing: str = "auto"
    """Log-prob passes: `prefix` encodes each image and prompt once per group and runs only completion
    tokens for its G rows (exact, fastest); `vision` encodes each image once and runs rows whole (works
    with gradient_checkpointing); `none` runs every row whole, as other trainers do; `auto`: the
    fastest the model's family supports (prefix, or vision under gradient_checkpointing, else none)."""
    generation_sharing: str = "auto"
    """Sampling: `prefix` prefills each prompt once and samples its G rows from the repeated cache;
    `none` uses transformers' generate (every row prefilled); `auto`: prefix for Qwen2-VL families."""
    rollout_engine: str = "hf"
    """Who samples: hf (the policy itself, in this process) | vllm (a vLLM server, see `vllm`) | a
    registered engine. Evaluation during training samples through the same engine."""
    overlap_rollout: bool = False
    """Sample step t+1 while step t updates (engines in another process): one step off-policy, the
    staleness corrected by the importance-sampling weights below and shown as `engine/staleness`."""
    vllm_importance_sampling_correction: bool | None = None
    """Weigh each sampled token by the importance ratio p_trainer / p_engine, bounded as
    vllm_importance_sampling_mode says: the engine's kernels, precision or stale weights sample from a
    slightly different policy. None: on whenever the engine reports log-probs of its own (vllm)."""
    vllm_importance_sampling_mode: str = "token_truncate"
    """token_truncate (each token's ratio clipped to [clip_min, clip_max]; Yao et al. 2025, "Your
    efficient RL framework secretly brings you off-policy RL training") | token_mask (a token whose ratio
    is outside the bounds weighs 0) | sequence_truncate (the row's ratio, the product over its tokens,
    clipped and applied to every token) | sequence_mask (a row whose ratio is outside weighs 0; TRL's
    default). The raw ratios are logged as `engine/is_ratio_*`."""
    vllm_importance_sampling_clip_min: float | None = None
    """Lower bound C_min of the ratio (None: none)."""
    vllm_importance_sampling_clip_max: float | None = 2.0
    """Upper bound C_max of the ratio (C = 2 as Yao et al. 2025; TRL defaults to 3; None: none)."""
    skip_zero_advantage_groups: bool = False
    """Skip the forward/backward passes of rows whose advantage is zero (groups whose rewards are all
    equal): they add no gradient, so only float rounding changes. Needs beta = 0 (their KL term would be lost)."""
    mask_truncated_completions: bool = False
    """Exclude completions that hit max_completion_length without an end token from the loss."""

    learning_rate: float = 1e-5
    """Peak AdamW learning rate."""
    weight_decay: float = 0.01
    """AdamW weight decay."""
    adam_beta1: float = 0.9
    """AdamW beta1."""
    adam_beta2: float = 0.999
    """AdamW beta2."""
    warmup_ratio: float = 0.1
    """Fraction of optimizer updates spent warming up linearly."""
    lr_scheduler_type: str = "linear"
    """Schedule after warmup: linear | cosine | constant."""
    max_grad_norm: float = 1.0
    """Gradient clipping norm (0: off)."""

    reward_funcs: list[str] = field(default_factory=lambda: ["answer"])
    """Reward names or `module:function` of the user's own: answer (the task's ternary reward, +1 correct,
    0 wrong, -1 no answer; the study's name `counting` is the same), answer_strict (answer tags only;
    `counting_strict`), format (the prompt style's format)."""
    reward_weights: list[float] | None = None
    """One weight per reward function (None: all 1.0)."""

    logging_steps: int = 1
    """Write a metrics line every N steps."""
    log_completions_steps: int = 50
    """Dump the step's completions (text and reward parts) to completions.jsonl every N steps (0: never)."""
    report_to: list[str] = field(default_factory=lambda: ["tensorboard"])
    """Metric sinks beyond metrics.jsonl: tensorboard, wandb."""
    progress: bool = True
    """Show a progress bar."""

    data: DataConfig = field(default_factory=DataConfig)
    """Training and evaluation data."""
    prompt: PromptConfig = field(default_factory=PromptConfig)
    """How questions are put to the model."""
    lora: LoraSettings = field(default_factory=LoraSettings)
    """Parameter-efficient training with LoRA adapters."""
    remedies: list[str] = field(default_factory=list)
    """Further cold-start remedies beside the built-in ones (which their own sections turn on): names a
    plug-in registered (`vlm_grpo.guidance.register_remedy`) or `package.module:ClassName` (a `Remedy`
    subclass). A remedy with options declares them (its `options` dataclass) and they are its section,
    under its name (`replay.min_reward=0`)."""
    sections: dict[str, Any] = field(default_factory=dict, repr=False)
    """The sections registered by the modules that own them (`config_sections.register_section`:
    injection, sft, dynamic_sampling, tools, vllm, a plug-in's), one of each, by name; read as
    attributes (`cfg.injection`). Written flat: a YAML file has `injection:`, never `sections:`."""

    def __post_init__(self) -> None:
        # Every registered section is present, at its defaults where the config does not set it.
        for name, cls in registered_sections(self.remedies).items():
            self.sections.setdefault(name, cls())

    def __getattr__(self, name: str) -> Any:
        # Only reached when normal lookup fails: a registered section's name.
        sections = self.__dict__.get("sections") or {}
        if name in sections:
            return sections[name]
        raise AttributeError(f"{type(self).__name__!r} has no attribute {name!r}")

    @property
    def rows_per_step(self) -> int:
        return self.prompts_per_step * self.num_generations

    @property
    def effective_minibatch_size(self) -> int:
        return self.minibatch_size or self.rows_per_step


def load_config(path: str | Path | None = None, overrides: typing.Sequence[str] = ()) -> TrainConfig:
    """Defaults, then the YAML preset at `path`, then `key=value` overrides (dots for nesting)."""
    raw: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file {path} does not exist")
        loaded = yaml.safe_load(path.read_text()) or {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"{path}: the top level must be a mapping of keys to values")
        raw = loaded
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(
                f"override {item!r} must look like key=value (nested keys with dots: injection.mode=random)"
            )
        _set_nested(raw, key.strip().split("."), yaml.safe_load(value) if value.strip() else None)
    return validate(from_dict(TrainConfig, raw))


def from_dict(cls: type, raw: dict[str, Any], prefix: str = "", base: Any = None) -> Any:
    """Build dataclass `cls` from a plain dict, converting and type-checking each field; a field not in
    `raw` keeps its value in `base` (a nested section's default in its parent: `injection.rate`'s
    initial 0.8 stays when only `injection.rate.schedule` is set), else the class default. For
    `TrainConfig`, a registered section's key builds that section (`sections`)."""
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.name != "sections"}
    owned = registered_sections(raw.get("remedies") or []) if "sections" in hints else {}
    unknown = sorted(set(raw) - set(fields) - set(owned))
    moved = [_moved(prefix + key) for key in unknown if prefix + key in MOVED]
    if moved:
        raise ConfigError("; ".join(moved))
    if unknown:
        raise ConfigError(_unknown_key(prefix, unknown[0], set(fields) | set(owned)))
    kwargs = {}
    for name, value in raw.items():
        if name in owned:
            continue
        inner = getattr(base, name) if base is not None else _default_of(fields[name])
        kwargs[name] = _coerce(hints[name], value, f"{prefix}{name}", inner)
    if owned:
        kwargs["sections"] = {
            name: _coerce(section, raw[name], name, section()) for name, section in owned.items() if name in raw
        }
    return dataclasses.replace(base, **kwargs) if base is not None else cls(**kwargs)


def registered_sections(remedies: typing.Sequence[str] = ()) -> dict[str, type]:
    """Every section a config may hold: the registered ones, and the options of a remedy named by import
    path in `remedies` (its `options` dataclass, under its `name`)."""
    found = declared_sections()
    for spec in remedies:
        if ":" not in spec:
            continue
        try:
            cls = import_object(spec, "remedy")
        except ValueError as exc:
            raise ConfigError(str(exc)) from exc
        options = getattr(cls, "options", None)
        if options is not None and dataclasses.is_dataclass(options):
            found[cls.name] = options
    return found


def _default_of(f: dataclasses.Field) -> Any:
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return None if f.default is dataclasses.MISSING else f.default


def _moved(key: str, value: Any = None) -> str:
    shown = key if value is None else f"{key}={value}"
    note = f" ({MOVED_NOTES[key]})" if key in MOVED_NOTES else ""
    return f"'{shown}' is now '{MOVED[key]}'{note}"


def upgraded(raw: dict[str, Any]) -> dict[str, Any]:
    """A config.yaml this project wrote before keys moved (`MOVED`) as the same settings under today's
    keys, so that a study's run folder trained then is reused when nothing else changed."""
    raw = copy.deepcopy(raw)
    with_tools = not isinstance(raw.get("tools"), list) or bool(raw["tools"])
    for old, new in MOVED.items():
        parent, _, leaf = old.rpartition(".")
        holder = raw.get(parent) if parent else raw
        if not isinstance(holder, dict) or leaf not in holder or isinstance(holder[leaf], dict):
            continue  # absent, or a section already
        value = holder.pop(leaf)
        if value is None or not re.fullmatch(r"[\w.]+", new) or (old == "max_turns" and not with_tools):
            continue  # a default of nothing, or a move that is not one key (dtype: below)
        _set_nested(raw, new.split("."), value)
        if old in MOVED_NOTES:
            raw["injection"]["prefix_ratio"]["schedule"] = "linear"
    tools = raw.pop("tool_use", None) or {}
    if tools:
        raw["tools"] = {**tools, **(raw.get("tools") or {})}
    for name, options in (raw.pop("remedy_options", None) or {}).items():
        raw[name] = {**options, **(raw.get(name) or {})}
    folded = {"float32": "fp32", "bfloat16": "bf16-true", "float16": "fp16-mixed"}.get(raw.pop("dtype", "auto"))
    if folded and raw.get("precision", "auto") == "auto":
        raw["precision"] = folded
    return raw


def _unknown_key(prefix: str, key: str, known: set[str]) -> str:
    """The message for a misspelt key: the closest known key when one is near (a typo is the usual
    cause), else every key of that section, so the fix is on the same line either way."""
    close = difflib.get_close_matches(key, sorted(known), n=1)
    if close:
        return f"unknown key '{prefix}{key}' (did you mean '{prefix}{close[0]}'?)"
    return f"unknown key '{prefix}{key}'; known keys here: {', '.join(sorted(known))}"


def to_dict(cfg: Any) -> dict[str, Any]:
    """Plain values, a run config's sections flat among its keys (as a YAML file writes them)."""
    out = dataclasses.asdict(cfg)
    out.update(out.pop("sections", {}))
    return out


def _coerce(hint: Any, value: Any, key: str, default: Any = None) -> Any:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _coerce(inner[0], value, key, default)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        value = to_dict(value)  # a section passed as its dataclass (the Python API)
    if hint is Schedule and isinstance(value, (int, float)) and not isinstance(value, bool):
        value = {"value": value}  # a number where a schedule goes: a constant
    if dataclasses.is_dataclass(hint):
        if not isinstance(value, dict):
            if key in MOVED:  # a flat key that became a section (dynamic_sampling=true)
                raise ConfigError(_moved(key, value))
            raise ConfigError(f"{key} must be a mapping, got {value!r}")
        return from_dict(hint, value, f"{key}.", default if isinstance(default, hint) else None)
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key} must be a mapping, got {value!r}")
        return {str(k): v for k, v in value.items()}
    if origin is list:
        items = value if isinstance(value, list) else [value]
        return [_coerce(args[0], item, key) for item in items]
    if hint is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if hint is float and isinstance(value, str):
        try:  # YAML 1.1 reads 5e-5 (no dot) as a string
            return float(value)
        except ValueError:
            pass
    if hint is str and isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    if not isinstance(value, hint) or (hint is int and isinstance(value, bool)):
        raise ConfigError(f"{key}={value!r} must be of type {hint.__name__}")
    return value


def _set_nested(raw: dict[str, Any], keys: list[str], value: Any) -> None:
    for key in keys[:-1]:
        if isinstance(raw.get(key), (int, float)) and not isinstance(raw.get(key), bool):
            raw[key] = {"value": raw[key]}  # a schedule written as its number, then given a key of its own
        raw = raw.setdefault(key, {})
        if not isinstance(raw, dict):
            raise ConfigError(f"cannot set {'.'.join(keys)}: {key} is not a section")
    raw[keys[-1]] = value
