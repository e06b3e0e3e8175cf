"""Every task's parser on literal strings (hostile ones included), its ternary reward, its
demonstrations under every style, counting's reading of row answers, a task of one's own that
prompt styles and scores follow, and tasks loaded by name with their options."""

import random

import numpy as np
import pytest

from vlm_grpo.errors import BadSample
from vlm_grpo.tasks import Task, get_task
from vlm_grpo.tasks.base import tag_contents
from vlm_grpo.tasks.multiple_choice import Choice
from vlm_grpo.tasks.rewards import Scorer
from vlm_grpo.tasks.short_answer import normalize
from vlm_grpo.tasks.styles import PromptConfig, get_style

MC = get_task("multiple_choice")
CHOICE = Choice("B", ("red", "blue", "A dog"))


def test_tag_contents_strip_nested_tags():
    assert tag_contents("<answer> x </answer> and <answer><answer>y</answer></answer>") == ["x", "y"]
    assert tag_contents("<answer>unclosed") == []


# ------------------------------------------------------------------ multiple choice
@pytest.mark.parametrize(
    "text, expected",
    [
        ("B", "B"),
        ("(B)", "B"),
        ("The answer is B.", "B"),
        ("answer: (C)", "C"),
        ("<answer>B</answer>", "B"),
        ("<answer>b</answer>", "B"),
        ("<answer>B. blue</answer>", "B"),
        ("<answer>A dog</answer>", "C"),  # a choice's text beats the article "A"
        ("<answer>(C) A dog</answer>", "C"),
        ("<answer>A</answer><answer>B</answer>", "A"),  # several tags: the first readable one
        ("<answer><answer>B</answer></answer>", "B"),  # nested tags
        ("<answer>none of them</answer> so (B)", "B"),  # unreadable tag: the study's fallback
        ("(A) red (B) blue", "B"),  # the last parenthesised letter
        ("I think it is C", "C"),  # a lone letter at the end
        ("blue", "B"),  # a choice's text standing alone
        ("Blue!", "B"),
        ("Bob", None),  # a letter inside a word
        ("A cube is red", None),  # "A" as an article
        ("the answer is a cube", None),  # lower-case "a" after "answer is"
        ("Who am I", None),  # "I" is not among the three choices' letters
        ("It is E", None),
        ("", None),
        ("<answer></answer>", None),
    ],
)
def test_multiple_choice_parser(text, expected):
    assert MC.parse(text, CHOICE) == expected


def test_multiple_choice_rows_and_shuffling():
    question, target = MC.read_sample("Which colour?", "blue", {"choices": ["red", "blue"]}, "r#1")
    assert question == "Which colour?\n(A) red\n(B) blue" and target == Choice("B", ("red", "blue"))
    assert MC.read_sample("Q", "(a)", {"choices": ["x", "y"]}, "r#1")[1].letter == "A"
    shuffled = get_task("multiple_choice", {"shuffle_choices": True, "seed": 3})
    options = ["w", "x", "y", "z"]
    first = shuffled.read_sample("Q", "y", {"choices": options}, "row#7")
    assert first == shuffled.read_sample("Q", "y", {"choices": options}, "row#7")  # fixed per sample
    assert first[1].options[ord(first[1].letter) - ord("A")] == "y"
    orders = {shuffled.read_sample("Q", "y", {"choices": options}, f"row#{i}")[1].options for i in range(20)}
    assert len(orders) > 1
    for fields, answer, message in [
        ({}, "A", "needs `choices`"),
        ({"choices": ["only"]}, "A", "at least two"),
        ({"choices": ["x", "y"]}, "green", "not among the choices"),
        ({"choices": ["x", "y"]}, "C", "not among the choices"),
        ({"choices": ["x", ""]}, "A", "empty"),
    ]:
        with pytest.raises(BadSample, match=message):
            MC.read_sample("Q", answer, fields, "r#9")


def test_multiple_choice_letters_only():
    letters_only = get_task("multiple_choice", {"accept_choice_text": False})
    assert letters_only.parse("blue", CHOICE) is None and letters_only.parse("B", CHOICE) == "B"
    assert letters_only.reward("blue", CHOICE) == -1.0 and MC.reward("red", CHOICE) == 0.0


# ------------------------------------------------------------------ short answers
@pytest.mark.parametrize(
    "text, normal",
    [
        ("The Red Cube!", "red cube"),
        ("two", "2"),
        ("An apple, a pear", "apple pear"),
        ("3.5 metres", "3.5 metres"),
        ("1,000 people", "1000 people"),
        ("yes.", "yes"),
        ("", ""),
    ],
)
def test_short_answer_normalisation(text, normal):
    assert normalize(text) == normal


@pytest.mark.parametrize(
    "text, reward",
    [
        ("red", 1.0),
        ("Crimson.", 1.0),
        ("<answer> the red one </answer>", 0.0),
        ("<answer>RED</answer> or blue", 1.0),
        ("The answer is red. It is bright.", 1.0),
        ("answer: blue", 0.0),
        ("I think that the colour of this cube must be red", -1.0),  # free-form: no answer read
        ("<answer></answer>", -1.0),
        ("", -1.0),
        ("...", -1.0),
    ],
)
def test_short_answer_reward(text, reward):
    task = get_task("short_answer")
    assert task.reward(text, task.read_answer(["red", "crimson"], "r")) == reward


def test_short_answer_rows():
    task = get_task("short_answer")
    assert task.read_answer("Two", "r") == ("Two",) and task.is_correct("2", ("two",))
    assert task.read_answer(7, "r") == ("7",)
    for bad in ("", [], None, "!!"):
        with pytest.raises(BadSample):
            task.read_answer(bad, "r#3")


# ------------------------------------------------------------------ numbers
@pytest.mark.parametrize(
    "text, value",
    [
        ("1,000", 1000.0),
        ("1.000", 1.0),  # a decimal point, never a thousands separator
        ("12,345,678.5", 12345678.5),
        ("-3.5", -3.5),
        ("\u22122", -2.0),  # unicode minus
        ("3/4", 0.75),
        ("-1/2", -0.5),
        ("from 3-4", 4.0),  # a range: the last number, not minus four
        ("x2 and 7", 7.0),  # digits glued to a word are not a number
        ("\u0663", None),  # Arabic-Indic three: only ASCII digits are read
        ("1/0", None),
        ("<answer>2.5</answer> then 7", 2.5),
        ("<answer>about 4 or 5</answer>", 5.0),
        ("", None),
        ("no number", None),
    ],
)
def test_numeric_parser(text, value):
    assert get_task("numeric").parse(text) == value


def test_numeric_tolerance_and_rows():
    task = get_task("numeric", {"rel_tol": 0.01})
    assert task.reward("3.14", 3.1416) == 1.0 and task.reward("3.0", 3.1416) == 0.0
    exact = get_task("numeric")
    assert exact.reward("0.1", 0.1) == 1.0 and exact.reward("0.1001", 0.1) == 0.0
    assert exact.read_answer("<answer> 1,234.5 </answer>", "r") == 1234.5 and exact.read_answer(3, "r") == 3.0
    assert exact.format_answer(0.1) == "0.1" and exact.format_answer(3.0) == "3" and exact.format_answer(-2.5) == "-2.5"
    for bad in ("three", float("nan"), True, None, "1 2"):
        with pytest.raises(BadSample):
            exact.read_answer(bad, "r#2")


# ------------------------------------------------------------------ math
def test_math_answers_are_checked_symbolically():
    pytest.importorskip("math_verify")
    task = get_task("math")
    half = task.read_answer("\\frac{1}{2}", "r")
    assert task.reward("so $\\boxed{\\frac{2}{4}}$", half) == 1.0
    assert task.reward("<answer>0.5</answer>", half) == 1.0
    assert task.reward("<answer>1/2</answer>", half) == 1.0
    assert task.reward("<answer>3</answer>", half) == 0.0
    assert task.reward("no idea", half) == -1.0 and task.reward("", half) == -1.0
    assert task.read_answer(4, "r").text == "4"
    with pytest.raises(BadSample):
        task.read_answer("   ", "r#1")


# ------------------------------------------------------------------ every task, every style
TARGETS = {
    "counting": 7,
    "multiple_choice": CHOICE,
    "short_answer": ("red", "crimson"),
    "numeric": -2.5,
    "math": "\\frac{1}{2}",
}
CUSTOM = PromptConfig(style="custom", template="Q: {question}", demonstration="The answer is {answer}.")


@pytest.mark.parametrize("name", list(TARGETS))
@pytest.mark.parametrize("style", ["default", "r1v", "r1v_eval", CUSTOM])
def test_every_demonstration_earns_the_top_reward(name, style):
    if name == "math":
        pytest.importorskip("math_verify")
    task = get_task(name)
    target = task.read_answer(TARGETS[name], "r") if name == "math" else TARGETS[name]
    built = get_style(style, task)
    scorer = Scorer(["answer", "answer_strict", "format"], None, built, task)
    for seed in range(5):
        demo = built.demonstration(target, random.Random(seed))
        score = scorer(demo, target)
        assert score.correct and score.format_ok and score.answer_present, (demo, score)
        if built.name.startswith("r1v"):  # tagged: R1-V's strict reading scores it too
            assert score.reward == 3.0 and score.strict_correct, demo
        else:
            assert score.reward == 1.0 + -1.0 + 1.0, demo


def test_r1v_instructions_name_the_answer_kind():
    for name, kind in [("counting", "number"), ("multiple_choice", "letter"), ("short_answer", "word")]:
        text = get_style("r1v", get_task(name)).messages("Q?")[-1]["content"][1]["text"]
        assert f"final answer ({kind})" in text
    r1v_eval = get_style("r1v_eval")
    assert r1v_eval.system is None and r1v_eval.messages("How many?")[-1]["content"][1]["text"] == (
        "How many? First output the thinking process in <think> </think> and final answer (number) "
        "in <answer> </answer> tags."
    )


# ------------------------------------------------------------------ counting rows
@pytest.mark.parametrize(
    ("value", "expected"),
    [(7, 7), (np.int64(3), 3), ("12", 12), (" <answer> 5 </answer> ", 5), ("-2", -2), ("<answer>4</answer>", 4)],
)
def test_counting_reads_row_answers(value, expected):
    assert get_task("counting").read_answer(value, "row#1") == expected


@pytest.mark.parametrize("value", ["seven", "3.5", True, None, "", "<answer></answer>", "1 2", [3]])
def test_counting_refuses_hostile_row_answers(value):
    with pytest.raises(BadSample, match="row#1: answer"):
        get_task("counting").read_answer(value, "row#1")


# ------------------------------------------------------------------ styles and scores follow the task
class LetterTask(Task):
    """A literal second task: one capital letter, read from answer tags or alone at the end."""

    name, answer_kind, answer_pattern, reasoning = "letters", "letter", "[A-E]", ("I compare the choices.",)

    def read_answer(self, value, row):
        return str(value).strip().upper()

    def parse(self, completion, target=None):
        import re

        found = re.search(r"<answer>\s*([A-E])\s*</answer>", completion) or re.search(r"\b([A-E])\s*$", completion)
        return found.group(1) if found else None

    def parse_strict(self, completion, target=None):
        import re

        found = re.search(r"<answer>\s*([A-E])\s*</answer>", completion)
        return found.group(1) if found else None


def test_styles_and_scores_follow_the_task():
    task = LetterTask()
    style = get_style("r1v", task)
    assert "final answer (letter)" in style.messages("Which?")[-1]["content"][1]["text"]
    assert style.format_ok("<think>I compare.</think><answer>B</answer>") and not style.format_ok("<answer>7</answer>")
    scorer = Scorer(["answer", "format"], None, style, task)
    assert scorer("<think>x</think><answer>B</answer>", "B").reward == 2.0
    assert scorer("so the answer is C", "B").reward == 0.0 and scorer("no idea", "B").reward == -1.0
    assert get_style("default", task).demonstration("D", random.Random(0)) == "D"


# ------------------------------------------------------------------ tasks by name
class YesNoTask(Task):
    """A user's task, loaded by `module:ClassName`."""

    name, answer_kind, answer_pattern = "yes_no", "word", "(?i:yes|no)"

    def __init__(self, strict_case: bool = False):
        self.strict_case = strict_case

    def read_answer(self, value, row):
        return str(value).strip().lower()

    def parse(self, completion, target=None):
        words = [w.strip(".!").lower() for w in completion.split()]
        found = [w for w in words if w in ("yes", "no")]
        return found[-1] if found else None

    def parse_strict(self, completion, target=None):
        return None


def test_user_task_by_name_and_option_errors():
    task = get_task(f"{__name__}:YesNoTask", {"strict_case": True})
    assert isinstance(task, YesNoTask) and task.strict_case and task.reward("Yes.", "yes") == 1.0
    with pytest.raises(ValueError, match="has no option colour .*strict_case"):
        get_task(f"{__name__}:YesNoTask", {"colour": 1})
    with pytest.raises(ValueError, match="unknown task 'nope'"):
        get_task("nope")
    with pytest.raises(ValueError, match="could not be imported"):
        get_task("no_such_module:Task")
    with pytest.raises(ValueError, match="did not build a Task"):
        get_task("random:Random")
