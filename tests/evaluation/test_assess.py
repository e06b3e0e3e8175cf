"""`vlm-grpo assess`: the baseline assessment on the tiny random model, and its arithmetic on known records."""

import json
from collections import defaultdict

import pytest
from typer.testing import CliRunner

from support import run_cli
from vlm_grpo.cli import app
from vlm_grpo.core.statistics import signal_probability
from vlm_grpo.evaluation.assess import RATES, assess, style_assessment
from vlm_grpo.evaluation.records import EvalOptions
from vlm_grpo.tasks.counting import parse_answer, parse_strict

G = 3
FAST = dict(
    n=3,
    group_size=G,
    temperature=1.0,
    options=EvalOptions(max_new_tokens=8, batch_size=16, device="cpu", progress=False),
)
ALL_RATES = [*RATES, *(f"greedy_{k}" for k in RATES)]


@pytest.fixture(scope="module")
def assessed(tmp_path_factory):
    out = tmp_path_factory.mktemp("assess")
    result = assess("tiny-qwen2-vl", "lab-clevr", "default,r1v", out=out, **FAST)
    records = [json.loads(line) for line in (out / "records.jsonl").read_text().splitlines()]
    return json.loads((out / "assessment.json").read_text()), result, records


def test_assessment_json_has_every_field_for_both_styles(assessed):
    on_disk, returned, _ = assessed
    assert on_disk == returned
    assert list(on_disk) == ["default", "r1v"]
    for a in on_disk.values():
        for key in ALL_RATES:
            assert key in a and len(a[f"{key}_ci"]) == 2, key
        for key in ("signal_probability", "signal_measured", "recommendation"):
            assert key in a
        assert "Single-domain" in a["recommendation"] and "Multi-domain" in a["recommendation"]
        assert a["n_prompts"] == 3 and a["group_size"] == G


def test_signal_probability_is_the_formula_on_its_own_format_rate(assessed):
    for a in assessed[0].values():
        assert a["signal_probability"] == pytest.approx(1 - (1 - a["answer_present_rate"]) ** G)


def test_rates_and_measured_signal_recompute_from_the_records(assessed):
    on_disk, _, records = assessed
    for style, a in on_disk.items():
        sampled = [r for r in records if r["prompt_style"] == style and r["decoding"] == "sampled"]
        greedy = [r for r in records if r["prompt_style"] == style and r["decoding"] == "greedy"]
        assert len(sampled) == 3 * G and len(greedy) == 3
        for prefix, rows in (("", sampled), ("greedy_", greedy)):
            parsed = [parse_answer(r["completion"]) for r in rows]
            assert a[prefix + "answer_present_rate"] == pytest.approx(sum(p is not None for p in parsed) / len(rows))
            assert a[prefix + "tag_answer_rate"] == pytest.approx(
                sum(parse_strict(r["completion"]) is not None for r in rows) / len(rows)
            )
            assert a[prefix + "accuracy"] == pytest.approx(
                sum(p == r["answer"] for p, r in zip(parsed, rows)) / len(rows)
            )
        groups = defaultdict(list)
        for r in sampled:
            groups[r["sample_id"]].append(r["reward"])
        assert len(groups) == 3
        assert a["signal_measured"] == pytest.approx(sum(len(set(g)) > 1 for g in groups.values()) / len(groups))


def test_intervals_bracket_the_rates(assessed):
    for a in assessed[0].values():
        for key in [*ALL_RATES, "signal_measured", "signal_probability"]:
            lo, hi = a[f"{key}_ci"]
            if a[key] is not None:
                assert 0 <= lo <= a[key] <= hi <= 1, key


def _record(sample, reward, answer=3):
    parsed = {1.0: answer, 0.0: answer + 1, -1.0: None}[reward]
    text = "" if parsed is None else f"<answer>{parsed}</answer>" if reward == 1.0 else str(parsed)
    return {
        "sample_id": sample,
        "reward": reward,
        "answer_present": parsed is not None,
        "correct": reward == 1.0,
        "strict_parsed": parse_strict(text),
        "completion": text,
    }


def test_style_assessment_on_known_groups():
    groups = {"a": [-1.0] * 4, "b": [1.0, 0.0, -1.0, -1.0], "c": [1.0] * 4}
    sampled = [_record(s, r) for s, rewards in groups.items() for r in rewards]
    greedy = [_record("a", -1.0), _record("b", 0.0), _record("c", 1.0)]
    a = style_assessment(sampled, greedy, group_size=4)
    assert a["answer_present_rate"] == pytest.approx(6 / 12) and a["accuracy"] == pytest.approx(5 / 12)
    assert a["tag_answer_rate"] == pytest.approx(5 / 12)
    assert a["accuracy_given_answer"] == pytest.approx(5 / 6)
    assert a["signal_measured"] == pytest.approx(1 / 3)  # only group b has unequal rewards
    assert a["signal_probability"] == pytest.approx(signal_probability(0.5, 4))
    assert a["greedy_answer_present_rate"] == pytest.approx(2 / 3) and a[
        "greedy_accuracy_given_answer"
    ] == pytest.approx(0.5)
    assert a["advice"]["band"] == ">30%"


def test_cli_prints_a_table_and_writes_the_file(tmp_path):
    result = CliRunner().invoke(
        app,
        [
            "assess",
            "--model",
            "tiny-qwen2-vl",
            "--data",
            "lab-clevr",
            "--styles",
            "default",
            "--n",
            "2",
            "--num-generations",
            "2",
            "--max-new-tokens",
            "6",
            "--out",
            str(tmp_path),
            "--device",
            "cpu",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "Baseline assessment" in result.output and "number present" in result.output
    assert "P(group has signal)" in result.output and "single-domain" in result.output
    assert list(json.loads((tmp_path / "assessment.json").read_text())) == ["default"]


def test_cli_rejects_an_unknown_style_without_a_traceback():
    args = ["--model", "tiny-qwen2-vl", "--data", "lab-clevr", "--styles", "default,fancy"]
    result = run_cli("assess", *args, timeout=120)
    assert result.returncode == 2
    assert "unknown prompt style 'fancy'" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.parametrize(
    "args, message",
    [
        (["--model", "no-such-model", "--data", "lab-clevr"], "unknown model 'no-such-model'"),
        (["--model", "tiny-qwen2-vl", "--data", "no-such-data"], "unknown data set 'no-such-data'"),
    ],
)
def test_cli_rejects_unknown_model_and_data(args, message):
    result = CliRunner().invoke(app, ["assess", *args])
    assert result.exit_code == 2 and message in result.output
    assert not isinstance(result.exception, Exception) or isinstance(result.exception, SystemExit)
