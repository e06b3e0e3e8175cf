"""Typed run configuration: defaults, YAML presets, ``key=value`` overrides, validation.

Defaults follow the study's appendix (clip 0.2, G = 8, 4 prompts per update, 4 GRPO epochs,
no KL, lr 1e-5, weight decay 0.01, 10 % warmup, grad-norm 1.0, 50 new tokens, T = 1.0,
top-p 1.0). Where TRL's ``GRPOConfig`` has the same concept, the field carries TRL's name.
A preset holds only what differs from these defaults.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .config_checks import MOVED, validate
from .config_sections import LoraSettings, LossSettings, ToolUseConfig, VLLMConfig
from .errors import ConfigError


@dataclass
class DataConfig:
    train: str = "lab-clevr"
    """Training set: a registered name (`lab-clevr`, `lab-superclevr`, or a plug-in's), a .jsonl/.parquet
    file, a folder of parquet files, or a hub id."""
    eval: list[str] = field(default_factory=list)
    """Held-out sets evaluated during training (the first is in-domain, the rest transfer)."""
    images: str | None = None
    """Root folder for relative image paths of the training set (default: the data file's folder)."""
    eval_holdout: int = 1000
    """Rows of the training source kept out of training for evaluation (the study keeps 15,000 of CLEVR)."""
    eval_size: int = 200
    """Samples of each eval set scored during training."""
    eval_steps: int = 0
    """Evaluate every N steps (0: never during training)."""
    on_bad_sample: str = "skip"
    """What to do with an unusable row: skip it (counted in `data/skipped`) or stop with an error."""
    columns: dict[str, str] = field(default_factory=dict)
    """Column names of a file or hub set for `image`, `question`, `answer` and `choices`, so a set loads
    without conversion (`data.columns.question=problem`); unnamed ones follow the known layouts."""
    split: str | None = None
    """Split of the training set where it holds several (a hub id, a `save_to_disk` DatasetDict, a folder of
    split folders or files such as `test.jsonl`); None: `train`."""


@dataclass
class PromptConfig:
    style: str = "default"
    """`default` (the bare question), `r1v` (think/answer tags, the study's strong baseline) or `custom`."""
    template: str | None = None
    """For `custom`: the user text, with `{question}` where the question goes."""
    system: str | None = None
    """For `custom`: an optional system prompt."""
    demonstration: str | None = None
    """For `custom`: how an injected answer is written, with `{answer}` where the number goes."""


@dataclass
class InjectionConfig:
    mode: str = "none"
    """Which rows of a group become ground-truth demonstrations: none | random | rate | rescue."""
    schedule: str = "constant"
    """How the injection rate moves over training: constant | linear_decay | linear (to the last step) | adaptive."""
    rate: float = 1.0
    """Strength s of the `constant` schedule (and the full strength of `adaptive`): the probability that a
    group is injected; in `rate` mode also the fraction of its rows. `random` at 1.0 is the study's rule."""
    rows: int | None = None
    """`rate` mode: rows injected per chosen group, instead of round(rate * G)."""
    initial_rate: float = 0.8
    """`linear_decay`: rate at step 0 (the study's 0.8)."""
    final_rate: float = 0.0
    """`linear_decay`: rate once decay ends (the study's 0.0)."""
    decay_fraction: float = 0.7
    """`linear_decay`: fraction of max_steps over which the rate decays (the study's 0.7)."""
    adaptive_low: float = 0.3
    """`adaptive`: full rate while the sampled number-present rate is below this."""
    adaptive_high: float = 0.9
    """`adaptive`: zero rate once the sampled number-present rate reaches this; linear between."""
    payload: str = "full"
    """What an injected row holds: `full` (the whole demonstration) or `prefix` (its first part, which
    the policy continues by sampling: Prefix-RFT / UFT / BREAD-style guidance)."""
    prefix_ratio: float = 0.5
    """`prefix`: share of the demonstration's tokens given (at least one); the policy samples the rest."""
    prefix_ratio_initial: float | None = None
    """`prefix`: when set (with prefix_ratio_final), the share decays linearly from this at step 0 to
    prefix_ratio_final at the last step, instead of staying at prefix_ratio."""
    prefix_ratio_final: float | None = None
    """`prefix`: the share at the last step of a decaying prefix."""


@dataclass
class SftConfig:
    warmup_steps: int = 0
    """The first N of max_steps are supervised steps on demonstrations (one per prompt, prompts_per_step
    prompts, one optimizer update each; nothing sampled): the SFT warm-up before GRPO (N >= max_steps:
    supervised fine-tuning only)."""
    coef: float = 0.0
    """CHORD-style weight mu of a supervised term on the step's demonstrations (one per group):
    loss = (1 - mu) x GRPO + mu x SFT. The value of the `constant` schedule and the full weight of
    `adaptive`; 0 (and schedule constant): off."""
    schedule: str = "constant"
    """How mu moves over training, as injection's schedules: constant | linear_decay | linear | adaptive."""
    initial_coef: float = 0.5
    """`linear_decay`: mu at step 0."""
    final_coef: float = 0.0
    """`linear_decay`: mu once decay ends."""
    decay_fraction: float = 0.7
    """`linear_decay`: fraction of max_steps over which mu decays."""
    adaptive_low: float = 0.3
    """`adaptive`: full mu while the sampled answer-present rate is below this."""
    adaptive_high: float = 0.9
    """`adaptive`: mu = 0 once the sampled answer-present rate reaches this; linear between."""
    gate: str = "none"
    """`no_success` (HPT-style): a group whose sampled rows hold no correct answer leaves the GRPO loss
    and trains on its demonstration instead (weight 1); `none`: no gate."""

    @property
    def active(self) -> bool:
        """The update holds a supervised term on some step."""
        return self.gate != "none" or self.schedule != "constant" or self.coef > 0


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
    """Weigh each sampled token by min(p_trainer / p_engine, cap) (truncated importance sampling): the
    engine's kernels, precision or stale weights sample from a slightly different policy. None: on
    whenever the engine reports log-probs of its own (vllm)."""
    vllm_importance_sampling_cap: float = 2.0
    """The cap C of the truncated weights (C = 2 as Yao et al. 2025, "Your efficient RL framework
    secretly brings you off-policy RL training"; TRL defaults to 3)."""
    skip_zero_advantage_groups: bool = False
    """Skip the forward/backward passes of rows whose advantage is zero (groups whose rewards are all
    equal): they add no gradient, so only float rounding changes. Needs beta = 0 (their KL term would be lost)."""
    dynamic_sampling: bool = False
    """DAPO's dynamic sampling: draw further prompt batches until the step holds prompts_per_step groups
    whose rewards differ (after injection), or dynamic_sampling_max_batches draws are spent."""
    dynamic_sampling_max_batches: int = 4
    """Most prompt batches one step draws with dynamic_sampling; a step still short trains on what it
    has, filled with groups without signal, and counts it in `sampling/short_steps`."""
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
    injection: InjectionConfig = field(default_factory=InjectionConfig)
    """Guidance injection of ground-truth demonstrations into groups."""
    sft: SftConfig = field(default_factory=SftConfig)
    """Supervised signal from demonstrations: warm-up steps, a CHORD-style term, HPT's gate."""
    remedies: list[str] = field(default_factory=list)
    """Further cold-start remedies beside injection, dynamic sampling and sft: names a plug-in registered
    (`vlm_grpo.guidance.register_remedy`) or `package.module:ClassName` (a `Remedy` subclass)."""
    remedy_options: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Keyword options of those remedies, by remedy name."""
    tools: list[str] = field(default_factory=list)
    """Tools the policy may call mid-answer (`crop`, `zoom`, a plug-in's, or `package.module:function`);
    empty: one turn, no tools. Their signatures are appended to every prompt."""
    max_turns: int = 1
    """Most assistant turns per rollout (2 or more with tools); max_completion_length bounds all of
    them together, tool turns included."""
    tool_use: ToolUseConfig = field(default_factory=ToolUseConfig)
    """Limits of a tool call and the optional tool reward terms."""
    lora: LoraSettings = field(default_factory=LoraSettings)
    """Parameter-efficient training with LoRA adapters."""
    vllm: VLLMConfig = field(default_factory=VLLMConfig)
    """The vLLM engine's server and its resources."""

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


def from_dict(cls: type, raw: dict[str, Any], prefix: str = "") -> Any:
    """Build dataclass `cls` from a plain dict, converting and type-checking each field."""
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - known)
    moved = [f"'{prefix}{key}' is now '{MOVED[prefix + key]}'" for key in unknown if prefix + key in MOVED]
    if moved:
        raise ConfigError("; ".join(moved))
    if unknown:
        raise ConfigError(_unknown_key(prefix, unknown[0], known))
    kwargs = {name: _coerce(hints[name], value, f"{prefix}{name}") for name, value in raw.items()}
    return cls(**kwargs)


def _unknown_key(prefix: str, key: str, known: set[str]) -> str:
    """The message for a misspelt key: the closest known key when one is near (a typo is the usual
    cause), else every key of that section, so the fix is on the same line either way."""
    close = difflib.get_close_matches(key, sorted(known), n=1)
    if close:
        return f"unknown key '{prefix}{key}' (did you mean '{prefix}{close[0]}'?)"
    return f"unknown key '{prefix}{key}'; known keys here: {', '.join(sorted(known))}"


def to_dict(cfg: Any) -> dict[str, Any]:
    return dataclasses.asdict(cfg)


def _coerce(hint: Any, value: Any, key: str) -> Any:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _coerce(inner[0], value, key)
    if dataclasses.is_dataclass(hint):
        if not isinstance(value, dict):
            raise ConfigError(f"{key} must be a mapping, got {value!r}")
        return from_dict(hint, value, prefix=f"{key}.")
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
        raw = raw.setdefault(key, {})
        if not isinstance(raw, dict):
            raise ConfigError(f"cannot set {'.'.join(keys)}: {key} is not a section")
    raw[keys[-1]] = value
