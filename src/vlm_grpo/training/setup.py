"""Building what a run trains: the policy (and its frozen reference), the optimizer and its schedule."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ..config import ConfigError, TrainConfig
from ..data import BadSample, eval_samples
from ..models import apply_lora, freeze_vision, frozen_copy, load_model_and_processor
from ..models.families import FamilyAdapter, adapter_for, refuse_video
from ..models.families.frames import apply_video_settings
from ..rollout import encode_prompts
from . import precision


@dataclass
class Policy:
    model: torch.nn.Module
    processor: object
    reference: torch.nn.Module | None
    """A frozen copy for the KL or its logging; None without one, or under LoRA."""
    adapter_reference: bool
    """Under LoRA the reference is the policy with its adapters switched off: no second model."""


def load_policy(
    cfg: TrainConfig, device: torch.device, strategy, numerics: precision.Policy, given=None, processor=None
) -> Policy:
    """The policy as configured (precision, LoRA, frozen vision, checkpointing, video positions), sharded by
    `strategy`, in train mode; the reference in the precision's reference dtype, LoRA adapters in float32.

    `given`, a model the caller built, is trained as is (moved in place to the device and weight dtype)
    instead of loading `cfg.model`; `processor`, when passed, is used instead of the model's own (a
    given model needs one)."""
    show_only_slow_bars()
    if given is None:
        model, loaded = load_model_and_processor(
            cfg.model, device, numerics.weights, cfg.trust_remote_code, cfg.lora.load_in_4bit
        )
        processor = processor or loaded
    else:
        model = given.to(device=device, dtype=numerics.weights)  # nn.Module.to works in place
    if cfg.max_pixels is not None:
        processor.image_processor.size["longest_edge"] = cfg.max_pixels
    apply_video_settings(processor, cfg.video)  # fps, max_frames, the per-frame budget: where the processor has videos
    adapter_for(model).use_video_positions(model, cfg.video.positions)
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


def frozen_loader(cfg: TrainConfig, device: torch.device, numerics: precision.Policy):
    """What loads a frozen model beside the policy (a distillation teacher, `RemedyKit.load_frozen`): by
    folder or name, on `device`, in the precision's reference dtype, without gradients, in eval mode."""

    def load(name: str):
        model, processor = load_model_and_processor(name, device, numerics.weights, cfg.trust_remote_code)
        model = precision.cast_reference(model.requires_grad_(False).eval(), numerics)
        return model, processor

    return load


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
    scheduler = lr_schedule(cfg.lr_scheduler_type, optimizer, int(cfg.warmup_ratio * updates), updates)
    backwards_per_update = math.ceil(local_minibatch / cfg.micro_batch_size)
    optimizer = strategy.prepare(model, optimizer, model.dtype, cfg.max_grad_norm, backwards_per_update)
    return optimizer, scheduler


def lr_schedule(name: str, optimizer, warmup: int, total: int) -> torch.optim.lr_scheduler.LambdaLR:
    """transformers' `get_scheduler` for linear, cosine and constant, the same factors step by step (the
    tests compare them). Not imported from there: transformers.optimization imports its Trainer's
    utilities, which import peft when it is installed, and peft imports bitsandbytes, whose start-up
    logs a kernel warning on some CPUs; a run without lora.load_in_4bit has no use for either."""

    def factor(step: int) -> float:
        if name == "constant":  # transformers' "constant" has no warmup
            return 1.0
        if step < warmup:
            return step / max(1, warmup)
        progress = (step - warmup) / max(1, total - warmup)
        if name == "cosine":  # half a cosine wave, as num_cycles=0.5 there
            return max(0.0, 0.5 * (1.0 + math.cos(math.pi * progress)))
        return max(0.0, (total - step) / max(1, total - warmup))

    if name not in ("linear", "cosine", "constant"):
        raise ValueError(f"lr_scheduler_type={name!r}: use linear, cosine or constant")
    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


# transformers draws a bar for every load ("Loading weights") and every save ("Writing model
# shards"). For small models (the 3 MB tiny and lab ones) they are done within a second and only
# clutter the run's own lines. Rather than guess from a size, a bar is drawn only once its work has
# taken BAR_DELAY_S: a 2B-7B policy's loads and checkpoints still show their progress, a small one's
# never appear. Hub downloads draw huggingface_hub's own bars, which this leaves alone.
BAR_DELAY_S = 2.0


def show_only_slow_bars() -> None:
    """Delay transformers' own progress bars by BAR_DELAY_S, for the rest of the process; a hook
    someone else set stays in place."""
    from transformers.utils import logging as hf_logging

    previous = hf_logging.set_tqdm_hook(_delayed_bar)
    if previous not in (None, _delayed_bar):
        hf_logging.set_tqdm_hook(previous)


def _delayed_bar(factory, args: tuple, kwargs: dict):
    return factory(*args, **{"delay": BAR_DELAY_S, **kwargs})


def release_memory() -> None:
    """After a run or an evaluation: collect what it left (model, optimizer, activations held in
    cycles) and hand cached GPU blocks back, so the next run of a study starts from the same memory."""
    import gc

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def check_world(cfg: TrainConfig, world, log) -> None:
    """Every process takes an equal share of every batch; a run of several says how it is spread."""
    size = world.size
    if size > 1 and world.is_main:
        log(f"{size} processes on {world.device.type}, fsdp={world.fsdp}, zero_stage={world.zero_stage}")
    for name, value in (("prompts_per_step", cfg.prompts_per_step), ("minibatch_size", cfg.effective_minibatch_size)):
        if value % size:
            raise ConfigError(
                f"{name}={value} must divide by the number of processes ({size}): "
                "each process takes an equal share of every batch"
            )


def prompt_length_check(processor, style, max_prompt_length: int | None):
    """The check a training prompt passes (None without max_prompt_length): a prompt over the limit,
    image tokens included, is a bad sample, never truncated."""
    if not max_prompt_length:
        return None

    def check(sample) -> None:
        length = int(encode_prompts(processor, style, [sample], torch.device("cpu")).inputs["attention_mask"].sum())
        if length > max_prompt_length:
            raise BadSample(
                f"{sample.id}: the prompt is {length} tokens (image tokens included), over "
                f"max_prompt_length={max_prompt_length}; prompts are never truncated. "
                "Raise max_prompt_length or lower max_pixels."
            )

    return check


def sample_check(adapter: FamilyAdapter, processor, style, max_prompt_length: int | None):
    """The check a training prompt passes (None: none): a video only where the family takes video (it
    stops the run, in one line), a prompt within max_prompt_length (`prompt_length_check`)."""
    length = prompt_length_check(processor, style, max_prompt_length)
    if adapter.supports_video:
        return length

    def check(sample) -> None:
        if sample.video is not None:
            refuse_video(adapter, f"{sample.id} has a video")
        if length is not None:
            length(sample)

    return check


def check_video_data(adapter: FamilyAdapter, source, rows) -> None:
    """At start: a family that cannot take video stops when the training rows hold videos (a video
    column, or a video among the first rows); later rows with one stop it when drawn (`sample_check`)."""
    if adapter.supports_video:
        return
    column = getattr(getattr(source, "columns", None), "video", None)
    if column is not None:
        refuse_video(adapter, f"{source.name} has a video column {column!r}")
    for sample in eval_samples(source, rows, 3):
        if sample.video is not None:
            refuse_video(adapter, f"{sample.id} has a video")
