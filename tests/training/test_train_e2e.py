"""Tiny end-to-end `vlm-grpo train` runs on CPU with a real (tiny, random) Qwen2-VL."""

import json
import sys

import pytest
import torch
from transformers import AutoModelForImageTextToText

from support import TINY, run_cli
from vlm_grpo.config import load_config
from vlm_grpo.training.trainer import Trainer

pytestmark = pytest.mark.slow

REQUIRED_KEYS = [
    "step",
    "reward/mean",
    "reward/std",
    "rollout/answer_present_rate",
    "rollout/answer_present_rate",
    "rollout/accuracy",
    "rollout/format_rate",
    "groups/frac_zero_std",
    "loss/policy",
    "loss/kl",
    "policy/clip_fraction",
    "policy/ratio_mean",
    "completion/mean_length",
    "completion/truncated_rate",
    "optim/lr",
    "optim/grad_norm",
    "time/step_s",
    "throughput/tokens_per_s",
]


def test_train_changes_every_parameter_and_checkpoint_reloads(tmp_path):
    cfg = load_config(
        None,
        TINY
        + [
            f"output_dir={tmp_path}",
            "max_steps=2",
            "save_steps=2",
            "num_iterations=2",
            "micro_batch_size=4",
            "injection.mode=random",
            "log_completions_steps=1",
        ],
    )
    trainer = Trainer(cfg)
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters() if p.requires_grad}
    trainer.train()
    unchanged = [n for n, p in trainer.model.named_parameters() if p.requires_grad and torch.equal(p, before[n])]
    assert not unchanged, f"parameters that did not change: {unchanged}"

    lines = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [line["step"] for line in lines] == [1, 2]
    for key in REQUIRED_KEYS:
        assert key in lines[-1], key
    assert lines[-1]["injection/rate"] > 0  # random mode injects into every group at strength 1
    assert list((tmp_path / "tensorboard").glob("events.out.tfevents.*"))
    dumped = [json.loads(line) for line in (tmp_path / "completions.jsonl").read_text().splitlines()]
    assert any(d["injected"] for d in dumped) and any(not d["injected"] for d in dumped)

    reloaded = AutoModelForImageTextToText.from_pretrained(tmp_path / "checkpoint-2")
    for name, param in reloaded.named_parameters():
        assert torch.equal(param, dict(trainer.model.named_parameters())[name].detach()), name


def test_resume_continues_from_latest_checkpoint(tmp_path):
    common = TINY + [f"output_dir={tmp_path}", "save_steps=1", "num_iterations=1", "injection.mode=random"]
    Trainer(load_config(None, common + ["max_steps=2"])).train()
    resumed = Trainer(load_config(None, common + ["max_steps=3", "resume=true"]))
    resumed.train()
    steps = [json.loads(line)["step"] for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3]
    assert (tmp_path / "checkpoint-3" / "model.safetensors").is_file()


def test_cli_trains_on_a_generic_jsonl(tmp_path):
    from PIL import Image

    images = tmp_path / "data"
    images.mkdir()
    rows = []
    for i in range(4):
        Image.new("RGB", (56, 56), (50 * i, 80, 80)).save(images / f"{i}.png")
        rows.append(
            json.dumps({"image": f"{i}.png", "question": "How many items are there in the image?", "answer": i + 3})
        )
    (images / "train.jsonl").write_text("\n".join(rows))
    out = tmp_path / "run"
    args = [f"output_dir={out}", "max_steps=1", f"data.train={images / 'train.jsonl'}", "data.eval_holdout=0"]
    result = run_cli("train", *TINY, *args, "num_iterations=1")
    assert result.returncode == 0, result.stderr[-2000:]
    assert (out / "checkpoint-1" / "trainer_state.pt").is_file()


def test_cli_reports_config_errors_without_a_traceback(tmp_path):
    result = run_cli("train", "num_generations=1", timeout=120)
    assert result.returncode == 2
    assert "num_generations=1" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.parametrize(
    "extra",
    [
        ["injection.mode=rate", "injection.rate=0.5", "off_policy=luffy"],
        ["injection.mode=rescue", "group_stats=sampled", "beta=0.04"],
        ["injection.mode=random", "injection.rate.schedule=linear_decay", "loss_type=grpo", "scale_rewards=none"],
        [
            "injection.mode=random",
            "injection.rate.schedule=adaptive",
            "prompt.style=r1v",
            "mask_truncated_completions=true",
        ],
        ["injection.mode=random", "loss_type=dr_grpo", "importance_sampling_level=sequence", "delta=1.5"],
    ],
)
def test_every_injection_mode_and_schedule_runs(tmp_path, extra):
    cfg = load_config(
        None, TINY + [f"output_dir={tmp_path}", "max_steps=2", "save_steps=2", "num_iterations=2"] + extra
    )
    Trainer(cfg).train()
    last = json.loads((tmp_path / "metrics.jsonl").read_text().splitlines()[-1])
    for key in (
        "injection/rate",
        "injection/groups_injected",
        "injection/advantage_mean",
        "policy/ratio_mean_injected",
        "policy/ratio_mean_sampled",
        "policy/clip_fraction_injected",
        "policy/clip_fraction_sampled",
        "injection/logp_mean",
    ):
        assert key in last, key
    if "beta=0.04" in extra:
        assert last["loss/kl"] is not None and last["loss/kl"] >= 0


def test_skipping_zero_advantage_groups_changes_nothing(tmp_path):
    weights = []
    for skip in ("false", "true"):
        cfg = load_config(
            None,
            TINY
            + [
                f"output_dir={tmp_path / skip}",
                "max_steps=3",
                "save_steps=3",
                "num_iterations=2",
                f"skip_zero_advantage_groups={skip}",
                "report_to=[]",
            ],
        )
        trainer = Trainer(cfg)
        trainer.train()
        weights.append({n: p.detach().clone() for n, p in trainer.model.named_parameters()})
    lines = [json.loads(line) for line in (tmp_path / "true" / "metrics.jsonl").read_text().splitlines()]
    assert any(line["groups/frac_zero_std"] > 0 for line in lines)  # something was skipped
    assert all(torch.allclose(weights[0][n], weights[1][n], atol=1e-5) for n in weights[0])  # float rounding only


@pytest.mark.parametrize(
    "extra",
    [
        [],
        ["injection.mode=random", "injection.payload=prefix"],
        ["sft.warmup_steps=1"],
        ["sft.coef=0.2", "beta=0.04"],
        ["dynamic_sampling.enabled=true"],
    ],
)
def test_a_step_calls_back_into_the_trainer_only_to_draw_again(tmp_path, extra):
    """One step, walked call by call: the engine, the remedies, the optimizer step and the checkpoint
    code call nothing in trainer.py; the one way back is a remedy's redraw (dynamic sampling), once
    per extra draw."""
    from vlm_grpo.training import trainer as trainer_module

    cfg = load_config(None, TINY + [f"output_dir={tmp_path}", "max_steps=2", "num_iterations=2", *extra])
    trainer, here, calls = Trainer(cfg), trainer_module.__file__, []

    def record(frame, event, arg):
        if event == "call" and frame.f_code.co_filename == here and frame.f_back.f_code.co_filename != here:
            calls.append(frame.f_code.co_name)

    sys.setprofile(record)
    try:
        metrics, _, _ = trainer.step(0, 0.0)
    finally:
        sys.setprofile(None)
        trainer.rollouts.close()
    redraws = int(metrics.get("sampling/batches_drawn", 1)) - 1
    assert calls == ["step"] + ["<lambda>"] * redraws  # the step itself, called from here, then the redraws
