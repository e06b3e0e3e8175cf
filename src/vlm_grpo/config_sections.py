"""Parts of the run configuration beside `config.TrainConfig`'s own fields: the policy loss's settings
(`LossSettings`, flat keys under TRL's names, which `TrainConfig` inherits), LoRA and QLoRA (`lora`), the
vLLM engine (`vllm`) and tool use (`tool_use`). Every field is documented, as there."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class LossSettings:
    """The policy loss's settings under the names of TRL's GRPOConfig. `TrainConfig` inherits them (they
    are flat keys of every run) and `core.losses.grpo_loss` reads them from the config itself;
    `loss_type` names a variant registered in `core.losses.LOSSES`."""

    loss_type: str = "bnpo"
    """How per-token losses become the minibatch's loss (TRL's names and meanings): bnpo (sum over the
    minibatch's tokens / its token count) | grpo (each row's token mean, then the mean over rows) | dr_grpo
    (sum / (rows x max_completion_length)) | dapo (sum / the step's tokens per minibatch: TRL's default,
    the same as bnpo when a step is one minibatch) | cispo (dapo's sum of -min(ratio, epsilon_high) x A x
    log p, the ratio without gradient; MiniMax-M1) | sapo (grpo's mean of a sigmoid gate instead of the
    clip; SAPO) | a registered variant (`core.losses.register_loss`)."""
    epsilon: float = 0.2
    """Lower clip range of the ratio (TRL: epsilon)."""
    epsilon_high: float | None = None
    """Upper clip range (None: same as epsilon; DAPO uses 0.28); with loss_type=cispo the cap of the ratio
    itself (ScaleRL recommends 5.0; cispo needs it set)."""
    delta: float | None = None
    """Two-sided clipping (TRL: delta): the unclipped ratio is capped at delta (> 1 + epsilon_high), so a
    negative advantage cannot push the loss up without bound; None: off."""
    importance_sampling_level: str = "token"
    """token (PPO's per-token ratio) | sequence (GSPO: the exp of the row's mean log-ratio, for every token)."""
    beta: float = 0.0
    """KL coefficient to the reference model (k3 estimator); 0 loads no reference."""
    sapo_temperature_pos: float = 1.0
    """loss_type=sapo: temperature of the gate on tokens with a positive advantage (TRL's default)."""
    sapo_temperature_neg: float = 1.05
    """loss_type=sapo: temperature of the gate on the other tokens (TRL's default)."""
    off_policy: str = "ratio"
    """Loss on demonstration tokens: `ratio` (the variant's own surrogate against rollout-time log-probs) or
    `luffy` (p/(p+gamma), unclipped, as LUFFY)."""
    luffy_gamma: float = 0.1
    """`off_policy=luffy`: gamma of the p/(p+gamma) shaping."""


@dataclass
class ToolUseConfig:
    """Multi-turn rollouts that call `tools` (`rollout/turns.py`): limits and optional reward terms,
    each added to the task's reward and reported apart (`reward/tool_*`)."""

    timeout_s: float = 10.0
    """Seconds a call may run (a user's tool, in its child process)."""
    memory_mb: int = 2048
    """Memory a user's tool may add to its child process."""
    call_reward: float = 0.0
    """Added to a rollout that wrote at least one tool call, well-formed or not."""
    valid_call_reward: float = 0.0
    """Added to a rollout with at least one call that ran."""
    turn_penalty: float = 0.0
    """Subtracted per assistant turn after the first."""


@dataclass
class LoraSettings:
    enabled: bool = False
    """Train LoRA adapters (peft) instead of all weights; the reference is the same model with adapters off."""
    r: int = 16
    """Adapter rank."""
    alpha: int = 32
    """Adapter scaling numerator (scale = alpha / r)."""
    dropout: float = 0.0
    """Dropout on the adapter input (0 keeps log-probs deterministic between passes)."""
    target_modules: list[str] | None = None
    """Module names to adapt (None: the language model's attention and MLP projections; the vision
    tower is left out)."""
    save_merged: bool = True
    """Checkpoints hold merged full weights (loadable without peft) as well as the adapter."""
    load_in_4bit: bool = False
    """QLoRA: hold the base weights in 4-bit NF4 (bitsandbytes; the vision tower and lm_head stay
    unquantized) and train full-precision adapters. Merged checkpoints are dequantized: full precision."""


@dataclass
class VLLMConfig:
    """The vLLM engine (`rollout_engine: vllm`): a server from its own environment (`make vllm-env`)."""

    mode: str = "spawn"
    """spawn: the trainer starts the server and stops it at the end | server: use one the user started
    (`python src/vlm_grpo/rollout/engines/vllm_server.py --model FOLDER --port N` in the vLLM environment)."""
    python: str = ".venv-vllm/bin/python"
    """The vLLM environment's interpreter (spawn)."""
    host: str = "127.0.0.1"
    """The server's host (server mode; spawn always uses 127.0.0.1)."""
    port: int = 0
    """The server's port (spawn: 0 picks a free one)."""
    dtype: str = "auto"
    """The engine's weights: auto (the trainer's compute dtype) | float32 | bfloat16 | float16."""
    startup_timeout: float = 600.0
    """Seconds the server may take to become healthy (the first start compiles: about a minute on a CPU)."""
    request_timeout: float = 600.0
    """Seconds one request may take before the engine counts as hung."""
    max_model_len: int = 4096
    """Longest prompt plus completion, in tokens (image tokens included)."""
    kv_cache_gib: float = 1.0
    """KV-cache size on a CPU (VLLM_CPU_KVCACHE_SPACE, unless set in the environment)."""
    gpu_memory_utilization: float = 0.5
    """Share of the GPU the engine may take (a GPU shared with the trainer needs room for both)."""
    enforce_eager: bool = False
    """No CUDA graphs or compilation (faster start, slower decoding)."""


__all__ = ["LoraSettings", "LossSettings", "ToolUseConfig", "VLLMConfig"]
