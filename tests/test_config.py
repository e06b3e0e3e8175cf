from pathlib import Path

import pytest

from vlm_grpo.config import ConfigError, TrainConfig, load_config, to_dict

CONFIGS = Path(__file__).resolve().parent.parent / "configs"


def test_defaults_are_the_studys():
    cfg = TrainConfig()
    assert (cfg.epsilon, cfg.num_generations, cfg.prompts_per_step, cfg.num_iterations, cfg.beta) == (0.2, 8, 4, 4, 0.0)
    assert (cfg.learning_rate, cfg.weight_decay, cfg.warmup_ratio, cfg.max_grad_norm) == (1e-5, 0.01, 0.1, 1.0)
    assert (cfg.max_completion_length, cfg.temperature, cfg.top_p) == (50, 1.0, 1.0)


def test_every_field_is_documented():
    import ast
    import inspect

    from vlm_grpo import config, config_sections

    nodes = [node for module in (config, config_sections) for node in ast.parse(inspect.getsource(module)).body]
    for node in nodes:
        if isinstance(node, ast.ClassDef) and node.name.endswith("Config"):
            body = node.body
            for i, item in enumerate(body):
                if isinstance(item, ast.AnnAssign):
                    nxt = body[i + 1] if i + 1 < len(body) else None
                    assert isinstance(nxt, ast.Expr) and isinstance(nxt.value, ast.Constant), (
                        f"{node.name}.{item.target.id} has no docstring"
                    )


def test_yaml_and_overrides(tmp_path):
    preset = tmp_path / "p.yaml"
    preset.write_text("max_steps: 7\ninjection:\n  mode: random\n")
    cfg = load_config(
        preset, ["injection.schedule=linear_decay", "learning_rate=5e-5", "data.eval=[lab-clevr,lab-superclevr]"]
    )
    assert cfg.max_steps == 7 and cfg.injection.mode == "random" and cfg.injection.schedule == "linear_decay"
    assert cfg.learning_rate == 5e-5 and cfg.data.eval == ["lab-clevr", "lab-superclevr"]


@pytest.mark.parametrize(
    "override,needle",
    [
        ("num_generations=1", "num_generations=1"),
        ("minibatch_size=5", "minibatch_size=5 must divide prompts_per_step x num_generations = 32"),
        ("micro_batch_size=3", "micro_batch_size=3 must divide minibatch_size=32"),
        ("injection.rows=8", "injection.rows=8 must be in 1..num_generations-1"),
        ("loss_type=seq_mean", "loss_type=seq_mean is now loss_type=grpo"),
        ("max_steps=ten", "max_steps='ten' must be of type int"),
        ("no_such_key=1", "unknown key 'no_such_key'"),
        ("injection.nope=1", "unknown key 'injection.nope'"),
        ("justtext", "must look like key=value"),
        ("fsdp=zero3", "fsdp='zero3' is not one of none, full_shard, shard_grad_op"),
        ("zero_stage=1", "zero_stage=1 is not one of 0, 2, 3"),
        ("micro_batch_tokens=-1", "micro_batch_tokens=-1 must be >= 0"),
        ("logprob_chunk_tokens=-8", "logprob_chunk_tokens=-8 must be >= 0"),
    ],
)
def test_validation_messages_name_field_value_and_rule(override, needle):
    with pytest.raises(ConfigError) as info:
        load_config(None, [override])
    assert needle in str(info.value)


@pytest.mark.parametrize(
    "overrides,needle",
    [
        (
            ["fsdp=full_shard", "skip_zero_advantage_groups=true"],
            "fsdp=full_shard needs skip_zero_advantage_groups=false",
        ),
        (["fsdp=shard_grad_op", "lora.enabled=true"], "fsdp=shard_grad_op with lora.enabled=true is not supported"),
        (["fsdp=full_shard", "micro_batch_tokens=512"], "micro_batch_tokens=512 with fsdp or zero_stage"),
        (["zero_stage=3", "lora.enabled=true"], "zero_stage=3 with lora.enabled=true is not supported"),
        (["fsdp=full_shard", "zero_stage=2"], "fsdp=full_shard and zero_stage=2: pick one"),
    ],
)
def test_fsdp_refuses_what_it_cannot_do(overrides, needle):
    with pytest.raises(ConfigError) as info:
        load_config(None, overrides)
    assert needle in str(info.value)


@pytest.mark.parametrize(
    "env,mode",
    [
        ({}, "none"),
        ({"ACCELERATE_USE_FSDP": "true", "FSDP_RESHARD_AFTER_FORWARD": "true"}, "full_shard"),
        ({"ACCELERATE_USE_FSDP": "true", "FSDP_RESHARD_AFTER_FORWARD": "false"}, "shard_grad_op"),
        ({"ACCELERATE_USE_FSDP": "true", "FSDP_SHARDING_STRATEGY": "SHARD_GRAD_OP"}, "shard_grad_op"),
    ],
)
def test_an_accelerate_fsdp_config_picks_the_sharding(monkeypatch, env, mode):
    from vlm_grpo.training.distributed.world import launcher_fsdp_mode

    for key in ("ACCELERATE_USE_FSDP", "FSDP_RESHARD_AFTER_FORWARD", "FSDP_SHARDING_STRATEGY"):
        monkeypatch.delenv(key, raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    assert launcher_fsdp_mode() == mode


@pytest.mark.parametrize(
    "env,stage",
    [
        ({}, 0),
        ({"ACCELERATE_USE_DEEPSPEED": "true", "ACCELERATE_DEEPSPEED_ZERO_STAGE": "3"}, 3),
        ({"ACCELERATE_USE_DEEPSPEED": "true", "ACCELERATE_DEEPSPEED_ZERO_STAGE": "2"}, 2),
    ],
)
def test_an_accelerate_deepspeed_config_picks_the_zero_stage(monkeypatch, env, stage):
    from vlm_grpo.training.distributed.world import launcher_zero_stage

    for key in ("ACCELERATE_USE_DEEPSPEED", "ACCELERATE_DEEPSPEED_ZERO_STAGE"):
        monkeypatch.delenv(key, raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    assert launcher_zero_stage() == stage


def test_all_errors_reported_at_once():
    with pytest.raises(ConfigError) as info:
        load_config(None, ["num_generations=1", "epsilon=-1"])
    assert "num_generations" in str(info.value) and "epsilon" in str(info.value)


@pytest.mark.parametrize("name", sorted(p.name for p in CONFIGS.glob("*.yaml")))
def test_shipped_presets_load_and_validate(name):
    cfg = load_config(CONFIGS / name)
    assert cfg.max_steps >= 1


def test_seed_preset_is_the_studys_setup():
    cfg = load_config(CONFIGS / "seed-qwen2vl-2b-clevr.yaml")
    assert cfg.model == "Qwen/Qwen2-VL-2B-Instruct" and cfg.data.train == "leonardPKU/clevr_cogen_a_train"
    assert cfg.data.eval_holdout == 15000 and cfg.prompt.style == "default" and cfg.beta == 0.0
    assert load_config(CONFIGS / "seed-qwen2vl-2b-clevr-r1v.yaml").prompt.style == "r1v"


@pytest.mark.parametrize("name", ["seed-qwen2vl-2b", "qwen2.5-vl-3b", "qwen3-vl-2b"])
def test_model_presets_have_r1v_twins(name):
    prefix = "seed-qwen2vl-2b-clevr" if name.startswith("seed") else f"{name}-clevr"
    plain, strong = (to_dict(load_config(CONFIGS / f"{prefix}{tail}.yaml")) for tail in ("", "-r1v"))
    assert plain["prompt"]["style"] == "default" and strong["prompt"]["style"] == "r1v"
    differ = {k for k in plain if plain[k] != strong[k]}
    assert differ == {"prompt", "output_dir"}  # the twins differ in the prompt only
