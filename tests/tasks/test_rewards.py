import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vlm_grpo.config import PromptConfig
from vlm_grpo.tasks.counting import parse_answer
from vlm_grpo.tasks.rewards import Scorer, format_reward, resolve
from vlm_grpo.tasks.styles import DEFAULT, R1V, get_style

counting_reward = resolve("counting")
counting_strict_reward = resolve("counting_strict")


def test_seed_examples():
    verbose = (
        "Looking at this image, I can see several geometric shapes arranged on a gray surface. There appear "
        "to be three cubes - two blue and one yellow - along with two red spheres"
    )
    assert counting_reward(verbose, 5, DEFAULT) == -1  # words, no digits: the study's cold start
    assert counting_reward("5", 5, DEFAULT) == 1
    assert counting_reward("4", 5, DEFAULT) == 0
    assert counting_reward("I see 3 cubes and 2 spheres, 5 in total", 5, DEFAULT) == 1  # last number wins
    assert counting_reward("<think>there are 4</think><answer>6</answer>", 6, R1V) == 1
    assert counting_reward("<answer> 7 </answer> or maybe 8", 7, R1V) == 1  # tag before fallback


def test_strict_reads_tags_only():
    assert counting_strict_reward("5", 5, R1V) == -1
    assert counting_strict_reward("<answer>5</answer>", 5, R1V) == 1
    assert counting_strict_reward("<answer>4</answer>", 5, R1V) == 0


def test_hostile_strings():
    assert parse_answer("") is None
    assert parse_answer("x5y") is None  # no word boundary
    assert parse_answer("3.5") == 5  # the seed's parser: last integer token
    assert parse_answer("-4") == 4
    assert parse_answer("<answer>five</answer>") is None
    assert parse_answer("<answer>\n 12 \n</answer>") == 12
    assert parse_answer("9" * 5000) == -1  # too long to be a count; must not raise
    assert counting_reward("9" * 5000, 9, DEFAULT) == 0
    assert parse_answer("٣") is None or isinstance(parse_answer("٣"), int)  # non-ASCII digits never raise


def test_format_per_style():
    assert format_reward(" 7 ", 7, DEFAULT) == 1
    assert format_reward("7 objects", 7, DEFAULT) == 0
    assert format_reward("<think>count</think><answer>7</answer>", 7, R1V) == 1
    assert format_reward("<answer>7</answer>", 7, R1V) == 0
    custom = get_style(PromptConfig(style="custom", template="Q: {question}", demonstration="Answer: {answer}"))
    assert custom.format_ok("Answer: 4") and not custom.format_ok("4")


def test_scorer_parts_and_weights():
    scorer = Scorer(["counting", "format"], [1.0, 0.5], R1V)
    score = scorer("<think>a</think><answer>3</answer>", 3)
    assert score.reward == 1.5 and score.correct and score.answer_present and score.format_ok and score.strict_correct
    score = scorer("there are three", 3)
    assert score.reward == -1.0 and not score.answer_present and score.parsed is None


def test_user_reward_by_module_path(tmp_path, monkeypatch):
    (tmp_path / "my_rewards.py").write_text("def close(completion, answer, style):\n    return 0.25\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert resolve("my_rewards:close")("1", 1, DEFAULT) == 0.25
    with pytest.raises(ValueError, match="could not be imported"):
        resolve("no_such_module_xyz:f")
    with pytest.raises(ValueError, match="unknown reward"):
        resolve("nonsense")


def test_demonstrations_score_plus_one():
    rng = random.Random(0)
    for style in (DEFAULT, R1V):
        for answer in range(3, 11):
            demo = style.demonstration(answer, rng)
            assert counting_reward(demo, answer, style) == 1 and style.format_ok(demo)
    assert len({R1V.demonstration(5, rng) for _ in range(30)}) > 1  # varied reasoning


@settings(max_examples=300, deadline=None)
@given(st.text(), st.integers(min_value=0, max_value=20))
def test_parser_never_raises(text, answer):
    for style in (DEFAULT, R1V):
        assert counting_reward(text, answer, style) in (-1, 0, 1)
        assert counting_strict_reward(text, answer, style) in (-1, 0, 1)
