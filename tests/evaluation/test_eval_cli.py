"""`vlm-grpo eval`: a saved tiny checkpoint on an in-domain and a transfer set, re-scored from its records."""

import json
from collections import defaultdict

import pytest
import torch
from typer.testing import CliRunner

from vlm_grpo.cli import app
from vlm_grpo.evaluation.final_eval import evaluate_models
from vlm_grpo.evaluation.records import EvalOptions
from vlm_grpo.rollout.engines import hf
from vlm_grpo.tasks.counting import parse_answer, parse_strict

DATA = ["lab-clevr", "lab-superclevr"]


def _rescore(records):
    """Accuracy, strict accuracy and number-present rate per (checkpoint, data set), from completions alone."""
    groups = defaultdict(list)
    for r in records:
        groups[r["checkpoint"], r["dataset"]].append(r)
    out = {}
    for key, rows in groups.items():
        out[key] = {
            "accuracy": sum(parse_answer(r["completion"]) == r["answer"] for r in rows) / len(rows),
            "strict_accuracy": sum(parse_strict(r["completion"]) == r["answer"] for r in rows) / len(rows),
            "answer_present_rate": sum(parse_answer(r["completion"]) is not None for r in rows) / len(rows),
        }
    return out


def _check(out, summary):
    records = [json.loads(line) for line in (out / "records.jsonl").read_text().splitlines()]
    assert json.loads((out / "summary.json").read_text()) == summary
    for r in records:
        for key in (
            "checkpoint",
            "dataset",
            "sample_id",
            "prompt_style",
            "completion",
            "parsed",
            "strict_parsed",
            "reward",
            "answer_present",
            "correct",
            "strict_correct",
        ):
            assert key in r, key
        assert r["parsed"] == parse_answer(r["completion"]) and r["strict_parsed"] == parse_strict(r["completion"])
    for (checkpoint, dataset), scores in _rescore(records).items():
        entry = summary["results"][checkpoint][dataset]
        for key, value in scores.items():
            assert entry[key] == pytest.approx(value), (checkpoint, dataset, key)
            lo, hi = entry[f"{key}_ci"]
            assert lo <= value <= hi
    for per_set in summary["results"].values():
        base, transfer = per_set[DATA[0]], per_set[DATA[1]]
        assert base["role"] == "in-domain" and transfer["role"] == "transfer"
        assert "generalization_ratio" in transfer
        expected = transfer["accuracy"] / base["accuracy"] if base["accuracy"] else None
        assert transfer["generalization_ratio"] == pytest.approx(expected)
    return records


def test_eval_cli_on_a_tiny_checkpoint_and_two_data_sets(tiny_dir, tmp_path):
    out = tmp_path / "eval"
    result = CliRunner().invoke(
        app,
        [
            "eval",
            "--model",
            str(tiny_dir),
            "--data",
            DATA[0],
            "--data",
            DATA[1],
            "--n",
            "3",
            "--max-new-tokens",
            "8",
            "--out",
            str(out),
            "--device",
            "cpu",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "Evaluation (greedy" in result.output
    summary = json.loads((out / "summary.json").read_text())
    assert summary["decoding"] == "greedy" and summary["in_domain"] == DATA[0] and summary["transfer"] == DATA[1:]
    records = _check(out, summary)
    assert len(records) == 6 and {r["dataset"] for r in records} == set(DATA)


def test_scores_and_ratio_when_the_model_answers(monkeypatch, tmp_path):
    """The real path end to end, with the model's text replaced by answers of known correctness."""

    def fake_generate(model, processor, prompts, group_size, max_new_tokens, temperature, *args):
        texts = []
        for i, sample in enumerate(prompts.samples):
            right = sample.domain == "lab-clevr" or i % 2 == 0  # every in-domain answer, half the transfer ones
            texts.append(
                f"<think>x</think><answer>{sample.answer}</answer>"
                if right and i % 3
                else f"I see {sample.answer if right else sample.answer + 1} things"
            )
        return None, None, torch.zeros(len(texts), dtype=torch.bool), texts

    monkeypatch.setattr(hf, "generate", fake_generate)  # the hf engine's sampler
    out = tmp_path / "eval"
    options = EvalOptions(batch_size=4, device="cpu", progress=False)
    summary = evaluate_models(["tiny-qwen2-vl"], DATA, "r1v", n=4, out=out, options=options)
    per_set = summary["results"]["tiny-qwen2-vl"]
    assert per_set[DATA[0]]["accuracy"] == 1.0 and per_set[DATA[0]]["strict_accuracy"] == pytest.approx(0.5)
    assert per_set[DATA[1]]["accuracy"] == pytest.approx(0.5)
    assert per_set[DATA[1]]["generalization_ratio"] == pytest.approx(0.5)
    _check(out, summary)


@pytest.mark.parametrize(
    "args, message",
    [
        (["--model", "tiny-qwen2-vl", "--data", "lab-clevr", "--style", "verbose"], "unknown prompt style 'verbose'"),
        (["--model", "missing/dir/ckpt", "--data", "lab-clevr"], "unknown model"),
        (["--model", "tiny-qwen2-vl", "--data", "lab-clevr", "--data", "nope.jsonl"], "does not exist"),
    ],
)
def test_eval_cli_rejects_bad_input_with_exit_2(args, message, tmp_path):
    result = CliRunner().invoke(app, ["eval", *args, "--out", str(tmp_path)])
    assert result.exit_code == 2, result.output
    assert message in result.output and "Traceback" not in result.output
