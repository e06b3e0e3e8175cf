"""Sections of the run configuration about how it runs rather than what it trains: LoRA and
QLoRA (`lora`), the vLLM engine (`vllm`) and tool use (`tool_use`). `config.TrainConfig` holds them;
every field is documented, as there."""

from __future__ import annotations

from dataclasses import dataclass


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


__all__ = ["LoraSettings", "ToolUseConfig", "VLLMConfig"]
