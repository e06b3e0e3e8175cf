"""Building what a run trains: the policy (and its frozen reference), the optimizer and its schedule."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from transformers import get_scheduler

from ..config import TrainConfig
from ..core import algo
from ..models import apply_lora, freeze_vision, frozen_copy, load_model_and_processor
from . import precision


@dataclass
class Policy:
    model: torch.nn.Module
    processor: object
    reference: torch.nn.Module | None
    """A frozen copy for the KL or its logging; None without one, or under LoRA."""
    adapter_reference: bool
    """Under LoRA the reference is the policy with its adapters switched off: no second model."""


def load_policy(cfg: TrainConfig, device: torch.device, strategy, numerics: precision.Policy) -> Policy:
    """The policy as configured (precision, LoRA, frozen vision, checkpointing), sharded by `strategy`, in
    train mode; the reference in the precision's reference dtype, LoRA adapters in float32."""
    model, processor = load_model_and_processor(
        cfg.model, device, numerics.weights, cfg.trust_remote_code, cfg.lora.load_in_4bit
    )
    if cfg.max_pixels is not None:
        processor.image_processor.size["longest_edge"] = cfg.max_pixels
    if cfg.freeze_vision_tower:
        freeze_vision(model)
    if cfg.gradient_checkpointing:
        model.gradient_checkpointing_enable()
    needs_reference = cfg.beta > 0 or cfg.use_reference_model
    reference = frozen_copy(model) if needs_reference and not cfg.lora.enabled else None
    reference = precision.cast_reference(reference, numerics)
    if cfg.lora.enabled:
        model = apply_lora(model, cfg.lora)
        precision.adapters_in_float32(model)
    strategy.shard_models(model, reference)
    model.train()
    return Policy(model, processor, reference, needs_reference and cfg.lora.enabled)


def make_optimizer(cfg: TrainConfig, model: torch.nn.Module, strategy, local_minibatch: int, numerics):
    """(optimizer as the strategy wraps it, linear-warmup schedule over every optimizer update).
    AdamW, over float32 master weights when the precision keeps low-precision weights."""
    optimizer = precision.make_optimizer(
        [p for p in model.parameters() if p.requires_grad],
        numerics,
        bool(cfg.zero_stage),
        lr=cfg.learning_rate,
        betas=(cfg.adam_beta1, cfg.adam_beta2),
        weight_decay=cfg.weight_decay,
    )
    precision.warn_if_updates_lost(model, optimizer, bool(cfg.zero_stage))
    updates = cfg.max_steps * cfg.num_iterations * (cfg.rows_per_step // cfg.effective_minibatch_size)
    scheduler = get_scheduler(
        cfg.lr_scheduler_type,
        optimizer,
        num_warmup_steps=int(cfg.warmup_ratio * updates),
        num_training_steps=updates,
    )
    backwards_per_update = math.ceil(local_minibatch / cfg.micro_batch_size)
    optimizer = strategy.prepare(model, optimizer, model.dtype, cfg.max_grad_norm, backwards_per_update)
    return optimizer, scheduler


def loss_settings(cfg: TrainConfig) -> algo.LossSettings:
    """The loss's hyper-parameters as the config names them."""
    return algo.LossSettings(
        cfg.epsilon,
        cfg.epsilon_high,
        cfg.beta,
        cfg.loss_type,
        cfg.injection.off_policy,
        cfg.injection.luffy_gamma,
        cfg.importance_sampling_level,
        cfg.delta,
        cfg.max_completion_length,
    )


def release_memory() -> None:
    """After a run or an evaluation: collect what it left (model, optimizer, activations held in
    cycles) and hand cached GPU blocks back, so the next run of a study starts from the same memory."""
    import gc

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
