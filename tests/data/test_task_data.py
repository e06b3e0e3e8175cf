"""Data for every task: answers of every type, choices, column mapping, lists of images; and a
tiny end-to-end `vlm-grpo train` per built-in task on files the test writes."""

import json

import pytest
from PIL import Image
from typer.testing import CliRunner

from vlm_grpo.cli import app
from vlm_grpo.data import BadSample, PromptStream, open_source
from vlm_grpo.tasks import Choice, get_task

ROWS = {
    "multiple_choice": [
        {"question": "Which colour is the square?", "choices": ["red", "green", "blue"], "answer": "B"},
        {"question": "Which shape?", "choices": ["cube", "ball"], "answer": "ball"},
    ],
    "short_answer": [
        {"question": "What colour is the square?", "answer": ["red", "dark red"]},
        {"question": "What is shown?", "answer": "a square"},
    ],
    "numeric": [
        {"question": "What fraction is red?", "answer": 0.25},
        {"question": "How wide is it in metres?", "answer": "1,250.5"},
    ],
    "math": [
        {"question": "Half of the squares are red. What fraction is red?", "answer": "\\frac{1}{2}"},
        {"question": "Two squares plus three squares?", "answer": 5},
    ],
    "counting": [
        {"question": "How many squares?", "answer": 3},
        {"question": "How many circles?", "answer": "<answer> 2 </answer>"},
    ],
}


def write_rows(folder, rows, repeat=3):
    folder.mkdir(parents=True, exist_ok=True)
    lines = []
    for i in range(repeat * len(rows)):
        Image.new("RGB", (56, 56), (40 * (i % 6), 90, 90)).save(folder / f"{i}.png")
        lines.append(json.dumps({"image": f"{i}.png", **rows[i % len(rows)]}))
    (folder / "train.jsonl").write_text("\n".join(lines) + "\n")
    return folder / "train.jsonl"


def test_rows_of_every_answer_type(tmp_path):
    mc = open_source(str(write_rows(tmp_path / "mc", ROWS["multiple_choice"])), task=get_task("multiple_choice"))
    assert mc[0].answer == Choice("B", ("red", "green", "blue"))
    assert mc[0].question == "Which colour is the square?\n(A) red\n(B) green\n(C) blue"
    assert mc[1].answer.letter == "B"  # the answer given as the choice's text
    short = open_source(str(write_rows(tmp_path / "sa", ROWS["short_answer"])), task=get_task("short_answer"))
    assert short[0].answer == ("red", "dark red") and short[1].answer == ("a square",)
    numeric = open_source(str(write_rows(tmp_path / "nu", ROWS["numeric"])), task=get_task("numeric"))
    assert [numeric[i].answer for i in range(2)] == [0.25, 1250.5]


def test_bad_multiple_choice_rows_are_named_skipped_and_counted(tmp_path):
    rows = [
        {"question": "Q1", "choices": ["x", "y"], "answer": "A"},
        {"question": "Q2", "answer": "A"},  # no choices
        {"question": "Q3", "choices": ["x", "y"], "answer": "green"},  # not among the choices
    ]
    path = write_rows(tmp_path, rows, repeat=1)
    source = open_source(str(path), task=get_task("multiple_choice"))
    with pytest.raises(BadSample, match="train.jsonl#1: multiple choice needs `choices`"):
        source[1]
    with pytest.raises(BadSample, match="train.jsonl#2: answer 'green' is not among the choices"):
        source[2]
    logged = []
    stream = PromptStream(source, list(range(3)), seed=0, log=logged.append)
    batch = stream.next_batch(2)
    assert {s.id for s in batch} == {"train.jsonl#0"} and stream.skipped == 2 and len(logged) == 2


def test_column_mapping_on_a_parquet_written_with_datasets(tmp_path):
    import datasets

    (tmp_path / "a.png").write_bytes(b"")
    Image.new("RGB", (32, 32), (200, 0, 0)).save(tmp_path / "a.png")
    table = datasets.Dataset.from_dict(
        {
            "img": [str(tmp_path / "a.png")] * 2,
            "problem": ["Which colour?", "Which shape?"],
            "label": ["red", "cube"],
            "options": [["red", "blue"], ["ball", "cube"]],
        }
    )
    table.to_parquet(str(tmp_path / "set.parquet"))
    mapping = {"image": "img", "question": "problem", "answer": "label", "choices": "options"}
    source = open_source(str(tmp_path / "set.parquet"), task=get_task("multiple_choice"), columns=mapping)
    assert source[0].answer.letter == "A" and source[1].answer.letter == "B"
    assert source[1].question.endswith("(A) ball\n(B) cube") and source[0].load_images()[0].size == (32, 32)
    with pytest.raises(ValueError, match="data.columns names columns it does not have .*answer=gold"):
        open_source(str(tmp_path / "set.parquet"), columns={**mapping, "answer": "gold"})


def test_a_list_of_images(tmp_path):
    for name in ("a.png", "b.png"):
        Image.new("RGB", (20, 20)).save(tmp_path / name)
    rows = [
        {"image": ["a.png"], "question": "How many?", "answer": 1},
        {"image": ["a.png", "b.png"], "question": "How many?", "answer": 2},
    ]
    (tmp_path / "t.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    source = open_source(str(tmp_path / "t.jsonl"))
    assert [image.size for image in source[0].load_images()] == [(20, 20)]
    assert [image.size for image in source[1].load_images()] == [(20, 20)] * 2


def test_lab_multiple_choice_sets():
    task = get_task("multiple_choice")
    sample = open_source("lab-clevr-mc", task=task)[5]
    count = open_source("lab-clevr")[5].answer
    options = sample.answer.options
    assert len(options) == 4 and options == tuple(sorted(options, key=int)) and str(count) in options
    assert options[ord(sample.answer.letter) - ord("A")] == str(count)
    assert sample.question.startswith("How many items are there in the image?\n(A) ")
    with pytest.raises(ValueError, match="set task=multiple_choice"):
        open_source("lab-superclevr-mc")


@pytest.mark.slow
@pytest.mark.parametrize("task", list(ROWS))
def test_train_every_task_end_to_end(tmp_path, task):
    if task == "math":
        pytest.importorskip("math_verify")
    path = write_rows(tmp_path / "data", ROWS[task])
    out = tmp_path / "run"
    args = ["train", "configs/smoke.yaml", f"task={task}", f"data.train={path}", f"output_dir={out}"]
    args += ["max_steps=2", "save_steps=2", "data.eval_holdout=0", "progress=false", "log_completions_steps=1"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [line["step"] for line in lines] == [1, 2]
    assert all(0.0 <= line["rollout/answer_present_rate"] <= 1.0 for line in lines)
    assert not any(key.startswith("rollout/number_present") for key in lines[0])  # one name: answer_present
    dumped = [json.loads(line) for line in (out / "completions.jsonl").read_text().splitlines()]
    assert dumped and all("answer_present" in row for row in dumped)
    assert (out / "checkpoint-2" / "trainer_state.pt").is_file()
