"""The run configuration: defaults, YAML and overrides, validation (every violation at once, FSDP's
limits), accelerate's configs picking the sharding, the shipped presets, keys that moved, sections
written flat and read back, a remedy's options from one module; named registries, and the lab
registered through the plug-in hook."""

import pytest

from support import ROOT
from vlm_grpo.config import ConfigError, TrainConfig, load_config, to_dict
from vlm_grpo.data import DATASETS
from vlm_grpo.models import registered_models
from vlm_grpo.registry import Registry

CONFIGS = ROOT / "configs"


def test_defaults_are_the_studys():
    cfg = TrainConfig()
    assert (cfg.epsilon, cfg.num_generations, cfg.prompts_per_step, cfg.num_iterations, cfg.beta) == (0.2, 8, 4, 4, 0.0)
    assert (cfg.learning_rate, cfg.weight_decay, cfg.warmup_ratio, cfg.max_grad_norm) == (1e-5, 0.01, 0.1, 1.0)
    assert (cfg.max_completion_length, cfg.temperature, cfg.top_p) == (50, 1.0, 1.0)


def test_every_field_is_documented():
    import ast
    import dataclasses
    import inspect
    import textwrap

    from vlm_grpo.config_sections import DataConfig, LoraSettings, LossSettings, PromptConfig, Schedule, sections

    for cls in (TrainConfig, DataConfig, PromptConfig, LossSettings, LoraSettings, Schedule, *sections().values()):
        body = ast.parse(textwrap.dedent(inspect.getsource(cls))).body[0].body
        documented = {
            item.target.id
            for item, nxt in zip(body, body[1:])
            if isinstance(item, ast.AnnAssign) and isinstance(nxt, ast.Expr) and isinstance(nxt.value, ast.Constant)
        }
        own = set(cls.__dict__.get("__annotations__", {}))
        missing = {f.name for f in dataclasses.fields(cls) if f.name in own} - documented
        assert not missing, f"{cls.__name__} fields without a docstring: {sorted(missing)}"


def test_yaml_and_overrides(tmp_path):
    preset = tmp_path / "p.yaml"
    preset.write_text("max_steps: 7\ninjection:\n  mode: random\n")
    cfg = load_config(
        preset, ["injection.rate.schedule=linear_decay", "learning_rate=5e-5", "data.eval=[lab-clevr,lab-superclevr]"]
    )
    assert cfg.max_steps == 7 and cfg.injection.mode == "random" and cfg.injection.rate.schedule == "linear_decay"
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
    "overrides,needle",
    [
        (["vllm.weight_transfer=nccl"], "vllm.weight_transfer='nccl' is not one of auto, file, body, broadcast"),
        (["vllm.mode=colocate", "vllm.weight_transfer=broadcast"], "vllm.weight_transfer=broadcast is for a server"),
    ],
)
def test_the_vllm_weight_transfer_is_checked(overrides, needle):
    with pytest.raises(ConfigError, match=needle):
        load_config(None, ["rollout_engine=vllm", *overrides])


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


@pytest.mark.parametrize(
    "override,needle",
    [
        ("dynamic_sampling=true", "'dynamic_sampling=True' is now 'dynamic_sampling.enabled'"),
        ("dynamic_sampling_max_batches=2", "'dynamic_sampling_max_batches' is now 'dynamic_sampling.max_batches'"),
        ("tools=[crop]", "'tools=['crop']' is now 'tools.names'"),
        ("max_turns=2", "'max_turns' is now 'tools.max_turns'"),
        ("tool_use.timeout_s=3", "'tool_use' is now 'tools (tool_use.KEY is now tools.KEY)'"),
        ("remedy_options.replay.min_reward=0", "'remedy_options' is now 'the remedy's own section"),
        ("injection.schedule=linear_decay", "'injection.schedule' is now 'injection.rate.schedule'"),
        ("injection.initial_rate=0.5", "'injection.initial_rate' is now 'injection.rate.initial'"),
        ("injection.prefix_ratio_initial=0.9", "is now 'injection.prefix_ratio.initial' (with injection.prefix_ratio"),
        ("sft.schedule=adaptive", "'sft.schedule' is now 'sft.coef.schedule'"),
        ("sft.adaptive_low=0.1", "'sft.adaptive_low' is now 'sft.coef.low'"),
        ("vllm_importance_sampling_cap=3", "'vllm_importance_sampling_cap' is now 'vllm_importance_sampling_clip_max'"),
    ],
)
def test_a_key_that_moved_stops_with_its_new_place(override, needle):
    with pytest.raises(ConfigError) as info:
        load_config(None, [override])
    assert needle in str(info.value)


def test_a_schedule_is_one_type_and_a_number_is_a_constant(tmp_path):
    cfg = load_config(None, ["injection.mode=random", "injection.rate=0.25", "sft.coef.schedule=linear_decay"])
    assert (cfg.injection.rate.schedule, cfg.injection.rate.value) == ("constant", 0.25)
    # only the schedule given: the quantity's own defaults stay (0.5 -> 0 for mu, 0.8 -> 0 for the rate)
    assert (cfg.sft.coef.schedule, cfg.sft.coef.initial, cfg.sft.coef.final) == ("linear_decay", 0.5, 0.0)
    preset = tmp_path / "p.yaml"
    preset.write_text("injection:\n  mode: random\n  rate: 0.5\n")
    decaying = load_config(preset, ["injection.rate.schedule=linear_decay"]).injection.rate
    assert (decaying.schedule, decaying.value, decaying.initial, decaying.decay_fraction) == (
        "linear_decay",
        0.5,
        0.8,
        0.7,
    )
    with pytest.raises(ConfigError, match=r"injection.rate.low=0.9 must be below injection.rate.high=0.5"):
        load_config(None, ["injection.rate.low=0.9", "injection.rate.high=0.5"])
    with pytest.raises(ConfigError, match=r"sft.coef.value=1.5 must be in \[0, 1\]"):
        load_config(None, ["sft.coef=1.5"])


def test_sections_are_written_flat_and_read_back(tmp_path):
    import yaml

    cfg = load_config(None, ["injection.mode=rate", "injection.rate=0.5", "tools.names=[crop]", "vllm.port=7"])
    written = to_dict(cfg)
    assert "sections" not in written and written["injection"]["rate"]["value"] == 0.5
    assert written["tools"]["names"] == ["crop"] and written["dynamic_sampling"] == {"enabled": False, "max_batches": 4}
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(written))
    assert load_config(tmp_path / "config.yaml") == cfg


def test_a_config_written_before_keys_moved_reads_as_the_same_settings():
    from vlm_grpo.config import from_dict, upgraded

    old = to_dict(TrainConfig())
    for name in ("injection", "sft", "tools", "dynamic_sampling", "vllm"):
        old.pop(name)
    old["injection"] = {"mode": "random", "schedule": "linear_decay", "rate": 1.0, "initial_rate": 0.6,
                        "final_rate": 0.0, "decay_fraction": 0.7, "adaptive_low": 0.3, "adaptive_high": 0.9,
                        "rows": None, "payload": "prefix", "prefix_ratio": 0.5, "prefix_ratio_initial": 0.9,
                        "prefix_ratio_final": 0.2, "off_policy": "luffy"}  # fmt: skip
    old["sft"] = {"warmup_steps": 2, "coef": 0.0, "schedule": "constant", "initial_coef": 0.5}
    old.update(dynamic_sampling=True, dynamic_sampling_max_batches=3, tools=[], max_turns=1, remedy_options={})
    old["tool_use"] = {"timeout_s": 5.0}
    del old["off_policy"]
    now = from_dict(TrainConfig, upgraded(old))
    expected = load_config(
        None,
        ["injection.mode=random", "injection.rate.schedule=linear_decay", "injection.rate.initial=0.6",
         "injection.payload=prefix", "injection.prefix_ratio.schedule=linear", "injection.prefix_ratio.initial=0.9",
         "injection.prefix_ratio.final=0.2", "off_policy=luffy", "sft.warmup_steps=2",
         "dynamic_sampling.enabled=true", "dynamic_sampling.max_batches=3", "tools.timeout_s=5"],
    )  # fmt: skip
    assert to_dict(now) == to_dict(expected)


def test_a_remedy_with_options_is_one_module(tmp_path, monkeypatch):
    """A remedy's options are a dataclass it declares: its section, built, checked and written with the
    rest of the config, read by the remedy as `self.settings`; nothing else is touched."""
    module = tmp_path / "patience_remedy.py"
    module.write_text(
        "from dataclasses import dataclass\n"
        "from vlm_grpo.guidance import Remedy\n\n\n"
        "@dataclass\n"
        "class PatienceOptions:\n"
        "    steps: int = 3\n"
        '    """Steps to wait."""\n\n'
        "    def check(self, cfg, need):\n"
        '        need(self.steps >= 1, f"patience.steps={self.steps} must be >= 1")\n\n\n'
        "class Patience(Remedy):\n"
        '    name, options = "patience", PatienceOptions\n'
    )
    monkeypatch.syspath_prepend(str(tmp_path))  # named by import path: nothing registered for later tests
    import patience_remedy

    cfg = load_config(None, ["remedies=[patience_remedy:Patience]", "patience.steps=5"])
    assert cfg.patience == patience_remedy.PatienceOptions(steps=5) and to_dict(cfg)["patience"] == {"steps": 5}
    with pytest.raises(ConfigError, match="patience.steps=0 must be >= 1"):
        load_config(None, ["remedies=[patience_remedy:Patience]", "patience.steps=0"])
    with pytest.raises(ConfigError, match=r"unknown key 'patience.step' \(did you mean 'patience.steps'\?\)"):
        load_config(None, ["remedies=[patience_remedy:Patience]", "patience.step=2"])
    assert "patience" not in load_config(None, []).sections  # a run that does not name it has no such section


# ------------------------------------------------------------------ registries and plug-ins
def test_registry_names_the_choices_and_refuses_a_second_entry():
    registry = Registry("widget")
    registry.register("a", 1)
    with pytest.raises(ValueError, match=r"unknown widget 'b'; choose a"):
        registry.get("b")
    with pytest.raises(ValueError, match="already registered"):
        registry.register("a", 2)


def test_the_lab_registers_through_the_plugin_entry_point():
    assert {"lab-clevr", "lab-superclevr"} <= set(DATASETS.names())
    assert {"lab-base", "lab-base-cold", "tiny-qwen2-vl", "tiny-qwen2.5-vl"} <= set(registered_models())
