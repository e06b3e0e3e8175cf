"""Every field of TRL's GRPOConfig is taken by ours with TRL's meaning or refused with one line naming
what this project does instead; the table in docs/python-api.md is the code's own."""

import dataclasses
import re
import sys
from pathlib import Path

import pytest

trl = pytest.importorskip("trl")

from vlm_grpo import GRPOConfig  # noqa: E402
from vlm_grpo.config import ConfigError, TrainConfig  # noqa: E402
from vlm_grpo.models.compat import training_arguments_added_later  # noqa: E402
from vlm_grpo.training.trl_fields import IGNORED, MAPPED, ONLY_DEFAULT, SAME_KEY, TRL_DEFAULTS  # noqa: E402

DOC = Path(__file__).resolve().parents[2] / "docs" / "python-api.md"
BEGIN, END = "<!-- trl-fields: begin -->", "<!-- trl-fields: end -->"
TRL_FIELDS = {f.name: f for f in dataclasses.fields(trl.GRPOConfig)}
# Named in the tables, absent from GRPOConfig under an older transformers: its TrainingArguments lacks them.
LATER = training_arguments_added_later()
ACCEPTED = {**SAME_KEY, **MAPPED, **IGNORED}


def trl_default(name: str):
    f = TRL_FIELDS[name]
    return f.default_factory() if f.default is dataclasses.MISSING else f.default


def test_every_trl_field_is_accepted_or_refused_exactly_once():
    tables = [SAME_KEY, MAPPED, IGNORED, ONLY_DEFAULT]
    for name in TRL_FIELDS:
        assert sum(name in t for t in tables) == 1, name
    assert set().union(*tables) - LATER == set(TRL_FIELDS), set().union(*tables) - set(TRL_FIELDS)
    ours = {f.name for f in dataclasses.fields(TrainConfig)}
    assert set(SAME_KEY) == set(TRL_FIELDS) & ours
    assert not (set(MAPPED) | set(IGNORED) | set(ONLY_DEFAULT)) & ours


def test_only_default_fields_take_trls_default_and_refuse_another_value():
    for name, (allowed, why) in ONLY_DEFAULT.items():
        if name in LATER:
            continue
        assert allowed[0] == trl_default(name), name
        GRPOConfig(**{name: trl_default(name)})
        with pytest.raises(ConfigError, match=re.escape(why)):
            GRPOConfig(**{name: "something else"})


def test_ignored_fields_take_any_value_and_change_nothing():
    assert GRPOConfig(**{name: trl_default(name) for name in IGNORED}) == GRPOConfig()


def test_trls_defaults_are_trls():
    differ = {"log_completions_steps": ("log_completions", False), "warmup_ratio": ("warmup_steps", 0)}
    differ["report_to"] = ("report_to", "none")
    for key, value in TRL_DEFAULTS.items():
        name, trl_value = differ.get(key, (key, value))
        assert trl_default(name) == trl_value, key


def test_a_typical_trl_script_config_means_the_same_here(tmp_path):
    cfg = GRPOConfig(
        output_dir=str(tmp_path),
        per_device_train_batch_size=8,
        gradient_accumulation_steps=2,
        num_generations=8,
        learning_rate=1e-5,
        bf16=True,
        report_to="none",
        logging_steps=10,
        max_completion_length=256,
        loss_type="dapo",
        beta=0.0,
        max_steps=100,
    )
    # 16 rows per generation (8 per device x 2 steps), 2 prompts of 8; one update of 16 rows in passes of 8
    assert (cfg.prompts_per_step, cfg.micro_batch_size, cfg.minibatch_size) == (2, 8, 16)
    assert (cfg.precision, cfg.report_to, cfg.logging_steps, cfg.max_steps) == ("bf16-mixed", [], 10, 100)
    assert (cfg.learning_rate, cfg.max_completion_length, cfg.loss_type, cfg.beta) == (1e-5, 256, "dapo", 0.0)
    # what it leaves out is TRL's default where ours differs
    assert (cfg.num_iterations, cfg.weight_decay, cfg.warmup_ratio, cfg.seed, cfg.save_steps) == (1, 0.0, 0.0, 42, 500)
    assert cfg.log_completions_steps == 0


def test_step_counts_are_trls_optimizer_updates_when_a_step_holds_several():
    cfg = GRPOConfig(
        per_device_train_batch_size=4,
        gradient_accumulation_steps=2,
        steps_per_generation=4,
        num_generations=4,
        num_iterations=2,
        max_steps=40,
        warmup_steps=4,
        save_steps=20,
        eval_strategy="steps",
        eval_steps=8,
        log_completions=True,
        logging_steps=4,
    )
    # 16 rows per generation, updates of 8 rows, 2 iterations: 4 updates per step
    assert (cfg.prompts_per_step, cfg.micro_batch_size, cfg.minibatch_size) == (4, 4, 8)
    assert (cfg.max_steps, cfg.save_steps, cfg.data.eval_steps, cfg.logging_steps) == (10, 5, 2, 1)
    assert cfg.log_completions_steps == 1
    assert int(cfg.warmup_ratio * 40) == 4  # the schedule's warm-up: 4 of 40 updates
    with pytest.raises(ConfigError, match="give a multiple of 4"):
        GRPOConfig(
            per_device_train_batch_size=4, steps_per_generation=4, num_generations=4, num_iterations=1, max_steps=6
        )


def test_the_vllm_keys_set_the_engine():
    cfg = GRPOConfig(
        use_vllm=True,
        vllm_mode="server",
        vllm_server_base_url="http://10.0.0.2:8001",
        vllm_importance_sampling_mode="token_truncate",
        vllm_importance_sampling_clip_max=3.0,
        vllm_gpu_memory_utilization=0.4,
        vllm_max_model_length=2048,
    )
    assert (cfg.rollout_engine, cfg.vllm.mode, cfg.vllm.host, cfg.vllm.port) == ("vllm", "server", "10.0.0.2", 8001)
    assert (cfg.vllm_importance_sampling_clip_max, cfg.vllm.gpu_memory_utilization, cfg.vllm.max_model_len) == (
        3.0,
        0.4,
        2048,
    )
    assert (
        GRPOConfig(use_vllm=True, vllm_mode="colocate", vllm_importance_sampling_correction=False).vllm.mode
        == "colocate"
    )
    assert GRPOConfig(dataloader_num_workers=2).data.num_workers == 2
    # TRL's modes as they are; its deprecated cap is clip_max
    masked = GRPOConfig(use_vllm=True, vllm_importance_sampling_mode="sequence_mask", vllm_importance_sampling_cap=4.0)
    assert (masked.vllm_importance_sampling_mode, masked.vllm_importance_sampling_clip_max) == ("sequence_mask", 4.0)


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"optim": "adafactor"}, "this trainer steps AdamW"),
        ({"num_train_epochs": 3}, "set max_steps"),
        ({"max_steps": -1}, "set max_steps"),
        ({"per_device_train_batch_size": 8}, "max_steps is required"),
        ({"tf32": True}, "allow_tf32"),
        ({"report_to": "all"}, "name the sinks"),
        ({"bf16": True, "precision": "fp32"}, "give one"),
        ({"per_device_train_batch_size": 8, "micro_batch_size": 4, "max_steps": 1}, "both size the step"),
        ({"beta": 0.04, "use_bias_correction_kl": True}, "use_bias_correction_kl=False"),
        ({"eval_steps": 10}, "eval_strategy='steps'"),
        ({"logging_steps": 0.1}, "give a number of steps"),
        ({"hub_strategy": "every_save"}, "final checkpoint"),
        ({"resume_from_checkpoint": "runs/x/checkpoint-5"}, "resume=True"),
        ({"loss_type": "vespo"}, "loss_type='vespo' is not one of"),
    ],
)
def test_refusals_name_what_to_do_instead(settings, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        GRPOConfig(**settings)


def test_mapped_values():
    assert GRPOConfig(scale_rewards=False).scale_rewards == "none"
    assert GRPOConfig(bf16=False, fp16=False).precision == "fp32"
    assert GRPOConfig(fp16=True).precision == "fp16-mixed"
    assert GRPOConfig(use_cpu=True, disable_tqdm=True).device == "cpu"
    assert GRPOConfig(max_tool_calling_iterations=2, tools={"names": ["crop"]}).tools.max_turns == 3
    assert GRPOConfig(resume_from_checkpoint=True).resume
    assert GRPOConfig(num_train_epochs=3.0, max_steps=7).max_steps == 7
    assert GRPOConfig(warmup_steps=0.25).warmup_ratio == 0.25
    assert GRPOConfig(report_to=["wandb", "none"]).report_to == ["wandb"]


def table() -> str:
    """The docs table, from the tables themselves."""
    rows = ["| TRL field | here |", "|---|---|"]
    for name in TRL_FIELDS:
        if name in SAME_KEY:
            text = f"`{name}`: {SAME_KEY[name]}"
        elif name in MAPPED:
            text = MAPPED[name]
        elif name in IGNORED:
            text = f"accepted, ignored: {IGNORED[name]}"
        else:
            allowed, why = ONLY_DEFAULT[name]
            text = f"only {' or '.join(repr(v) for v in allowed)} (TRL's default); otherwise refused: {why}"
        rows.append(f"| `{name}` | {text.replace('|', '/')} |")
    return "\n".join(rows)


def test_the_docs_table_is_the_codes():
    text = DOC.read_text()
    rows = text[text.index(BEGIN) + len(BEGIN) : text.index(END)].strip().splitlines()
    # The docs show the newest GRPOConfig; under an older transformers its newer rows are left out.
    rows = [row for row in rows if not any(row.startswith(f"| `{name}` |") for name in LATER)]
    assert "\n".join(rows) == table(), "regenerate: python tests/api/test_trl_config.py"


if __name__ == "__main__":  # rewrite the table in docs/python-api.md
    text = DOC.read_text()
    start, end = text.index(BEGIN) + len(BEGIN), text.index(END)
    DOC.write_text(text[:start] + "\n" + table() + "\n" + text[end:])
    sys.exit(0)
