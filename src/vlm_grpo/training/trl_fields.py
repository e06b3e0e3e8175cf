"""TRL's `GRPOConfig` fields (its own and the `TrainingArguments` ones it inherits), each in one table
of what it is here; `trl_args.from_trl` applies them and docs/python-api.md shows them:

- `SAME_KEY`: a key of `TrainConfig` already, with TRL's meaning (a few values translated).
- `MAPPED`: turned into this project's keys, with TRL's meaning.
- `IGNORED`: how HF's Trainer runs, logs or evaluates; no value of it can change a trained result.
- `ONLY_DEFAULT`: accepted at TRL's default (what this trainer does), refused otherwise with one line
  naming what this project does instead.
"""

from __future__ import annotations

from typing import Any

SAME_KEY: dict[str, str] = {
    "output_dir": "the same (None: TRL's `trainer_output`)",
    "max_steps": "the same, required (-1, TRL's 'train num_train_epochs', is refused); with TRL's batch keys "
    "counted in optimizer updates as TRL does",
    "learning_rate": "the same",
    "lr_scheduler_type": "linear | cosine | constant, as transformers' (TRL's other schedules refused)",
    "weight_decay": "the same",
    "adam_beta1": "the same",
    "adam_beta2": "the same",
    "max_grad_norm": "the same",
    "gradient_checkpointing": "the same (TRL's default True, here False: memory only, no result changes)",
    "logging_steps": "the same (a ratio below 1 refused: give steps)",
    "report_to": "the same; 'none' is [], 'all' refused (sinks: tensorboard, wandb)",
    "save_steps": "the same (a ratio below 1 refused: give steps)",
    "save_total_limit": "the same",
    "push_to_hub": "the same: the final checkpoint is uploaded",
    "hub_model_id": "the same",
    "seed": "the same",
    "fsdp": "full_shard | shard_grad_op (None: none; TRL's other strings refused)",
    "trust_remote_code": "the same",
    "num_generations": "the same",
    "max_completion_length": "the same",
    "temperature": "the same",
    "top_p": "the same",
    "top_k": "the same",
    "beta": "the same (k3 KL to the reference)",
    "num_iterations": "the same",
    "epsilon": "the same",
    "delta": "the same",
    "epsilon_high": "the same",
    "sapo_temperature_neg": "the same",
    "sapo_temperature_pos": "the same",
    "importance_sampling_level": "the same: token | sequence",
    "reward_weights": "the same",
    "scale_rewards": "group | none (True / False: group / none); 'batch' refused",
    "loss_type": "grpo | bnpo | dr_grpo | dapo | cispo | sapo, TRL's meanings; luspo and vespo refused",
    "mask_truncated_completions": "the same",
    "vllm_importance_sampling_correction": "the same",
    "vllm_importance_sampling_mode": "the same: token_truncate | token_mask | sequence_truncate | sequence_mask",
    "vllm_importance_sampling_clip_min": "the same",
    "vllm_importance_sampling_clip_max": "the same",
}
"""TRL fields that are `TrainConfig` keys, and what they mean here."""

BATCH_KEYS = (
    "per_device_train_batch_size",
    "gradient_accumulation_steps",
    "steps_per_generation",
    "generation_batch_size",
)

MAPPED: dict[str, str] = {
    "per_device_train_batch_size": "micro_batch_size: rows per forward/backward on each process",
    "gradient_accumulation_steps": "minibatch_size = per_device_train_batch_size x this x processes: rows per "
    "optimizer update",
    "steps_per_generation": "prompts_per_step = per_device_train_batch_size x processes x this / num_generations",
    "generation_batch_size": "prompts_per_step = this / num_generations",
    "num_train_epochs": "accepted beside max_steps > 0 (TRL then ignores it too); without it refused: set max_steps",
    "warmup_steps": "warmup_ratio: a float below 1 as is; a number of optimizer updates over the run's updates",
    "optim": "adamw_torch / adamw_torch_fused: AdamW (fused where the device has it); others refused",
    "bf16": "precision=bf16-mixed (False with fp16 off: fp32; None: precision=auto)",
    "fp16": "precision=fp16-mixed",
    "use_cpu": "device=cpu",
    "disable_tqdm": "progress = not disable_tqdm",
    "eval_strategy": "'steps': data.eval_steps = eval_steps (or logging_steps); 'no': data.eval_steps=0; "
    "others refused",
    "eval_steps": "data.eval_steps, with eval_strategy='steps' (without it TRL never evaluates: refused)",
    "hub_strategy": "'end' (this project uploads the final checkpoint); others refused",
    "resume_from_checkpoint": "True: resume=True (the newest checkpoint in output_dir); a path refused",
    "use_vllm": "rollout_engine=vllm (False: hf)",
    "vllm_mode": "vllm.mode: server (a server you started) | colocate (vLLM inside the trainer's process)",
    "dataloader_num_workers": "data.num_workers: threads that decode the next step's images and videos ahead",
    "vllm_server_base_url": "vllm.host and vllm.port",
    "vllm_server_host": "vllm.host",
    "vllm_server_port": "vllm.port",
    "vllm_server_timeout": "vllm.startup_timeout",
    "vllm_gpu_memory_utilization": "vllm.gpu_memory_utilization",
    "vllm_tensor_parallel_size": "vllm.tensor_parallel_size (colocate: processes per engine)",
    "vllm_max_model_length": "vllm.max_model_len (None: this project's 4096)",
    "vllm_importance_sampling_cap": "vllm_importance_sampling_clip_max (TRL's deprecated name of it)",
    "use_bias_correction_kl": "False; True only with beta=0 (the KL term here is not multiplied by the ratio)",
    "log_completions": "log_completions_steps = logging_steps (False: 0)",
    "max_tool_calling_iterations": "tools.max_turns = this + 1 (None: as set)",
}
"""TRL-only fields `from_trl` turns into this project's keys, and how."""

IGNORED: dict[str, str] = {
    **dict.fromkeys(
        [
            "dataloader_pin_memory",
            "dataloader_persistent_workers",
            "dataloader_prefetch_factor",
            "dataloader_multiprocessing_context",
            "dataloader_in_order",
            "dataloader_drop_last",
        ],
        "rows are read in the training process; how a DataLoader fetches them changes no row",
    ),
    **dict.fromkeys(
        [
            "ddp_find_unused_parameters",
            "ddp_bucket_cap_mb",
            "ddp_broadcast_buffers",
            "ddp_static_graph",
            "ddp_backend",
            "ddp_timeout",
            "local_rank",
            "log_on_each_node",
            "save_on_each_node",
        ],
        "the trainer averages gradients itself (training/distributed); launcher and DDP settings change no gradient",
    ),
    **dict.fromkeys(
        [
            "logging_first_step",
            "logging_nan_inf_filter",
            "include_num_input_tokens_seen",
            "log_level",
            "log_level_replica",
            "run_name",
            "project",
            "skip_memory_metrics",
            "num_completions_to_print",
            "log_multimodal",
            "log_unique_prompts",
        ],
        "what the logs show; metrics.jsonl holds every logged step",
    ),
    **dict.fromkeys(
        [
            "per_device_eval_batch_size",
            "prediction_loss_only",
            "eval_do_concat_batches",
            "eval_use_gather_object",
            "eval_accumulation_steps",
            "include_for_metrics",
            "batch_eval_metrics",
            "eval_on_start",
        ],
        "held-out sets are scored greedily at step 0 and every data.eval_steps; HF's evaluation loop is not used",
    ),
    **dict.fromkeys(
        [
            "gradient_checkpointing_kwargs",
            "use_cache",
            "torch_empty_cache_steps",
            "ds3_gather_for_generation",
            "save_only_model",
            "vllm_group_port",
        ],
        "memory, speed or file layout only",
    ),
    **dict.fromkeys(
        [
            "do_train",
            "do_eval",
            "do_predict",
        ],
        "flags for a user's script; TRL's trainer reads none",
    ),
}
"""TRL fields accepted and ignored, each with why no value of it changes a result."""


def _only(message: str, **defaults: Any) -> dict[str, tuple[tuple, str]]:
    return {name: (value if isinstance(value, tuple) else (value,), message) for name, value in defaults.items()}


SAMPLING = "sampling takes temperature, top_p, top_k and max_completion_length"
ONLY_DEFAULT: dict[str, tuple[tuple, str]] = {
    **_only(
        "load the model yourself and pass it (model=...); precision, trust_remote_code, lora.load_in_4bit "
        "cover loading",
        model_init_kwargs=None,
    ),
    **_only("mixture-of-experts models train on the GRPO loss alone", router_aux_loss_coef=None),
    **_only("the model's dropout stays as its config sets it: set it to 0 there", disable_dropout=False),
    **_only("the output head runs in the compute dtype: precision=fp32 for float32", cast_lm_head_to_fp32=False),
    **_only("held-out sets are scored greedily, one completion per prompt", num_generations_eval=None),
    **_only(
        "rows are drawn in an order shuffled by seed",
        shuffle_dataset=True,
        train_sampling_strategy="random",
        length_column_name="length",
        data_seed=None,
    ),
    **_only("padding here is masked and unaligned", pad_to_multiple_of=("auto", None)),
    **_only(SAMPLING, generation_kwargs=None, min_p=None, repetition_penalty=1.0, cache_implementation=None),
    **_only("the prompt style writes the prompt (prompt.style, prompt.template)", chat_template_kwargs=None),
    **_only(
        "sampling runs in the hf engine (generation_sharing) or vllm (rollout_engine)",
        use_transformers_continuous_batching=False,
        transformers_continuous_batching_config=None,
        use_transformers_paged=False,
    ),
    **_only(
        "the vllm section sets the engine (vllm.mode, .gpu_memory_utilization, .max_model_len, .dtype)",
        vllm_model_impl="vllm",
        vllm_enable_sleep_mode=False,
        vllm_structured_outputs_regex=None,
    ),
    **_only(
        "loss_type=vespo is not a variant here (core.losses.register_loss adds one)",
        vespo_k_pos=2.0,
        vespo_lambda_pos=3.0,
        vespo_k_neg=3.0,
        vespo_lambda_neg=2.0,
    ),
    **_only(
        "weighted rewards are summed, then scaled by scale_rewards", multi_objective_aggregation="sum_then_normalize"
    ),
    **_only(
        "the reference stays the starting model",
        sync_ref_model=False,
        ref_model_mixup_alpha=0.6,
        ref_model_sync_steps=512,
    ),
    **_only("every completion token enters the loss", top_entropy_quantile=1.0),
    **_only(
        "no entropy bonus here",
        entropy_coef=0.0,
        use_adaptive_entropy=False,
        entropy_coef_min=0.0,
        entropy_coef_max=1.0,
        entropy_coef_delta=0.005,
        entropy_target=0.2,
    ),
    **_only(
        "engine importance weights are bounded by vllm_importance_sampling_mode and its clip_min / clip_max; "
        "DeepSeek-V3.2's off-policy sequence mask is not implemented",
        off_policy_mask_threshold=None,
    ),
    **_only("completions go to completions.jsonl in output_dir (log_completions_steps)", log_completions_hub_repo=None),
    **_only("schedules take no options: lr_scheduler_type and warmup_ratio", lr_scheduler_kwargs=(None, {})),
    **_only(
        "AdamW takes learning_rate, weight_decay, adam_beta1, adam_beta2 (eps 1e-8)",
        optim_args=(None, ""),
        adam_epsilon=1e-8,
        optim_target_modules=None,
    ),
    **_only("token means count every process's tokens", average_tokens_across_devices=True),
    **_only("the GRPO loss has no labels", label_smoothing_factor=0.0, label_names=None),
    **_only("evaluation runs at the training precision", bf16_full_eval=False, fp16_full_eval=False),
    **_only("matmul precision stays as torch has it: set torch.backends.cuda.matmul.allow_tf32 yourself", tf32=None),
    **_only("use gradient_checkpointing", activation_checkpointing=None, activation_checkpointing_kwargs=None),
    **_only("the model runs uncompiled", torch_compile=False, torch_compile_backend=None, torch_compile_mode=None),
    **_only(
        "log-probs come from this project's chunked output head (logprob_chunk_tokens)",
        use_liger_kernel=False,
        liger_kernel_config=None,
    ),
    **_only("no embedding noise here", neftune_noise_alpha=None),
    **_only("set micro_batch_size or micro_batch_tokens", auto_find_batch_size=False),
    **_only("metrics are written every logging_steps steps", logging_strategy="steps"),
    **_only(
        "checkpoints are written every save_steps steps and at the end",
        save_strategy="steps",
        enable_jit_checkpoint=False,
    ),
    **_only(
        "metric sinks are tensorboard and wandb (report_to)",
        trackio_space_id=None,
        trackio_bucket_id=None,
        trackio_static_space_id=None,
    ),
    **_only("evaluation starts at step 0", eval_delay=(0, 0.0)),
    **_only("log in with `hf auth login` or set HF_TOKEN", hub_token=None),
    **_only(
        "push_to_hub uploads the final checkpoint to hub_model_id with the hub's defaults",
        hub_private_repo=None,
        hub_revision=None,
        hub_always_push=False,
    ),
    **_only(
        "every checkpoint is kept (save_total_limit); `vlm-grpo eval` scores them",
        load_best_model_at_end=False,
        metric_for_best_model=None,
        greater_is_better=None,
    ),
    **_only(
        "resume=True continues the prompt stream where it stopped",
        ignore_data_skip=False,
        restore_callback_states_from_checkpoint=False,
    ),
    **_only("a run is reproducible from seed on a CPU; GPU kernels are left as they are", full_determinism=False),
    **_only(
        "processes come from torchrun or accelerate; fsdp or zero_stage shards",
        accelerator_config=None,
        parallelism_config=None,
        fsdp_config=None,
    ),
    **_only("zero_stage=2|3, or an accelerate config with DEEPSPEED", deepspeed=None),
    **_only("no debug modes here", debug=""),
    **_only("reward functions get the data set's other columns", remove_unused_columns=False),
}
"""TRL fields accepted only at the values listed (TRL's default first), each with what this project does."""

TRL_DEFAULTS: dict[str, Any] = {
    "num_iterations": 1,
    "learning_rate": 1e-6,
    "weight_decay": 0.0,
    "warmup_ratio": 0.0,
    "max_completion_length": 512,
    "loss_type": "dapo",
    "seed": 42,
    "logging_steps": 10,
    "save_steps": 500,
    "report_to": [],
    "log_completions_steps": 0,
    "vllm_importance_sampling_mode": "sequence_mask",
    "vllm_importance_sampling_clip_max": 3.0,
}
"""TRL's defaults where this project's differ and change a result or a count (a config sized by BATCH_KEYS)."""
