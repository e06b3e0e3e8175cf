"""The one summary type of every evaluation, on literal records: each rate under one name."""

import pytest

from vlm_grpo.evaluation.records import EvalSummary


def test_eval_summary_names_each_rate_once():
    records = [
        {"answer_present": True, "correct": True, "strict_correct": True, "strict_parsed": 3, "format_ok": True},
        {"answer_present": True, "correct": False, "strict_correct": False, "strict_parsed": None, "format_ok": False},
        {"answer_present": False, "correct": False, "strict_correct": False, "strict_parsed": None, "format_ok": False},
        {"answer_present": True, "correct": True, "strict_correct": False, "strict_parsed": None, "format_ok": True},
    ]
    summary = EvalSummary.of(records)
    assert summary.answer_present_rate.value == 0.75 and summary.accuracy.value == 0.5
    assert summary.tag_answer_rate.value == 0.25 and summary.style_format_rate.value == 0.5
    assert summary.accuracy_given_answer.value == pytest.approx(2 / 3) and summary.strict_accuracy.value == 0.25
    out = summary.to_dict("greedy_", ("answer_present_rate",))
    assert out["greedy_answer_present_rate"] == 0.75 and len(out["greedy_answer_present_rate_ci"]) == 2
    assert EvalSummary.of([]).accuracy.value is None
