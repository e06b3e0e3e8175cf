"""Every layout users bring, read as it is: image folders with metadata, `save_to_disk` folders, .json
and .csv files, TRL's conversational rows, LLaVA conversations, globs and lists of files, named splits;
each built from literal rows and tiny images, read through `open_source` as the trainer reads it; and
each layout, written by `datasets` where it writes it, training a step."""

import io
import json

import datasets
import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from support import LAB, LAB_CONFIG, one_line, samples, write_video
from vlm_grpo.data import BadSample, InMemorySource, PromptStream, open_source
from vlm_grpo.tasks import get_task

RED, GREEN, BLUE, WHITE = (220, 20, 20), (20, 200, 20), (20, 20, 220), (250, 250, 250)


def png(colour, size=(12, 8)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, colour).save(buf, format="PNG")
    return buf.getvalue()


def save_image(path, colour, size=(12, 8)):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, colour).save(path, format="JPEG" if path.suffix.lower() == ".jpg" else "PNG", quality=95)


def colours(sample):
    """The centre pixel of each of the sample's images, in order."""
    return [image.getpixel((image.width // 2, image.height // 2)) for image in sample.load_images()]


def close(got, want, tolerance=6):
    return all(abs(a - b) <= tolerance for a, b in zip(got, want))


def write_lines(path, rows):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


# ------------------------------------------------------------------ image folders


def image_folder(root, metadata="jsonl"):
    """Three images in nested folders, extensions in odd cases, rows in `metadata.<kind>`."""
    save_image(root / "a" / "red.JPG", RED)
    save_image(root / "a" / "b" / "green.Png", GREEN)
    save_image(root / "blue.png", BLUE)
    rows = [("a/red.JPG", "How many red?", 3), ("a/b/green.Png", "How many green?", 4), ("blue.png", "Blue?", 5)]
    if metadata == "jsonl":
        write_lines(root / "metadata.jsonl", [{"file_name": f, "question": q, "answer": a} for f, q, a in rows])
    else:
        (root / "metadata.csv").write_text(
            "file_name,question,answer\n" + "".join(f"{f},{q},{a}\n" for f, q, a in rows)
        )
    return root


@pytest.mark.parametrize("metadata", ["jsonl", "csv"])
def test_an_image_folder_reads_its_metadata_and_nested_images(tmp_path, metadata):
    got = samples(open_source(str(image_folder(tmp_path / "set", metadata))))
    assert [(s.question, s.answer) for s in got] == [("How many red?", 3), ("How many green?", 4), ("Blue?", 5)]
    assert [len(s.load_images()) for s in got] == [1, 1, 1]
    assert close(colours(got[0])[0], RED) and colours(got[1]) == [GREEN] and colours(got[2]) == [BLUE]


def test_an_image_folder_with_split_folders_reads_the_named_split(tmp_path):
    for split, answer in (("train", 3), ("test", 7)):
        save_image(tmp_path / split / "x.png", RED)
        write_lines(tmp_path / split / "metadata.jsonl", [{"file_name": "x.png", "question": "q?", "answer": answer}])
    assert open_source(str(tmp_path))[0].answer == 3
    assert open_source(str(tmp_path), split="test")[0].answer == 7
    with pytest.raises(ValueError) as info:
        open_source(str(tmp_path), split="validation")
    assert one_line(info).endswith("has no split 'validation'; it has train, test (set data.split)")


def test_an_image_folder_without_file_name_is_one_line(tmp_path):
    save_image(tmp_path / "x.png", RED)
    write_lines(tmp_path / "metadata.jsonl", [{"image": "x.png", "question": "q?", "answer": 3}])
    with pytest.raises(ValueError) as info:
        open_source(str(tmp_path))
    assert "a metadata row has no file_name" in one_line(info)


def test_a_missing_image_is_named_and_its_row_skipped(tmp_path):
    root = image_folder(tmp_path / "set")
    (root / "a" / "b" / "green.Png").unlink()
    source = open_source(str(root))
    with pytest.raises(BadSample, match=r"set#1: image file .*green.Png does not exist"):
        source[1].load_images()
    logged = []
    stream = PromptStream(source, np.arange(3), seed=0, log=logged.append)
    assert {s.id for s in stream.next_batch(4)} == {"set#0", "set#2"} and stream.skipped == 1


# ------------------------------------------------------------------ save_to_disk


def rows_dataset(answers, colour=RED):
    image = Image.open(io.BytesIO(png(colour)))
    n = len(answers)
    return datasets.Dataset.from_dict({"image": [image] * n, "question": ["How many?"] * n, "answer": answers})


def test_a_saved_dataset_and_dataset_dict(tmp_path):
    rows_dataset([3, 4]).save_to_disk(str(tmp_path / "one"))
    one = samples(open_source(str(tmp_path / "one")))
    assert [s.answer for s in one] == [3, 4] and colours(one[1]) == [RED]

    splits = datasets.DatasetDict({"train": rows_dataset([5]), "validation": rows_dataset([6, 7], GREEN)})
    splits.save_to_disk(str(tmp_path / "dict"))
    assert [s.answer for s in samples(open_source(str(tmp_path / "dict")))] == [5]
    held = samples(open_source(str(tmp_path / "dict"), split="validation"))
    assert [s.answer for s in held] == [6, 7] and colours(held[0]) == [GREEN]
    with pytest.raises(ValueError) as info:
        open_source(str(tmp_path / "dict"), split="test")
    assert one_line(info).endswith("has no split 'test'; it has train, validation (set data.split)")
    with pytest.raises(ValueError, match="has no split 'test'; it has train"):
        open_source(str(tmp_path / "one"), split="test")


# ------------------------------------------------------------------ .json and .csv files


def test_a_json_list_of_rows_and_a_csv_file(tmp_path):
    save_image(tmp_path / "imgs" / "r.png", RED)
    save_image(tmp_path / "imgs" / "g.png", GREEN)
    rows = [
        {"image": "imgs/r.png", "question": "Red?", "answer": 3},
        {"image": "imgs/g.png", "question": "Green?", "answer": 4},
    ]
    (tmp_path / "rows.json").write_text(json.dumps(rows, indent=2))
    (tmp_path / "rows.csv").write_text('image,question,answer\nimgs/r.png,"Red, or not?",3\nimgs/g.png,Green?,4\n')
    from_json = samples(open_source(str(tmp_path / "rows.json")))
    from_csv = samples(open_source(str(tmp_path / "rows.csv")))
    assert [(s.question, s.answer, colours(s)) for s in from_json] == [("Red?", 3, [RED]), ("Green?", 4, [GREEN])]
    assert [(s.question, s.answer, colours(s)) for s in from_csv] == [
        ("Red, or not?", 3, [RED]),
        ("Green?", 4, [GREEN]),
    ]
    assert [s.id for s in from_json] == ["rows.json#0", "rows.json#1"]


def test_csv_cells_stay_text(tmp_path):
    save_image(tmp_path / "r.png", RED)
    (tmp_path / "rows.csv").write_text("image,question,answer\nr.png,Code?,007\n")
    assert open_source(str(tmp_path / "rows.csv"), task=get_task("short_answer"))[0].answer == ("007",)


@pytest.mark.parametrize(
    "name, text, message",
    [
        ("rows.json", "[]", "holds no rows"),
        ("rows.jsonl", "\n", "holds no rows"),
        ("rows.csv", "", "is empty"),
        ("rows.csv", "image,question,answer\n", "holds no rows"),
        ("rows.json", '[{"image": "x.png"}, 3]', "row 1 is int, not an object of columns"),
    ],
)
def test_an_empty_or_malformed_file_is_one_line(tmp_path, name, text, message):
    (tmp_path / name).write_text(text)
    with pytest.raises(ValueError) as info:
        open_source(str(tmp_path / name))
    assert message in one_line(info)


# ------------------------------------------------------------------ conversational rows (TRL)


def trl_rows(tmp_path):
    save_image(tmp_path / "imgs" / "r.png", RED)
    system = {"role": "system", "content": "Answer with a number."}
    ask = {"type": "text", "text": "How many objects?"}
    return [
        {
            "prompt": [system, {"role": "user", "content": [{"type": "image"}, ask]}],
            "images": ["imgs/r.png"],
            "solution": "<answer> 3 </answer>",
        },
        {
            "prompt": [
                {
                    "role": "user",
                    "content": [{"type": "image"}, {"type": "text", "text": "Left, then"}, {"type": "image"}, ask],
                }
            ],
            "images": [{"bytes": None, "path": "imgs/r.png"}, {"path": None, "bytes": list(png(BLUE))}],
            "solution": "<answer> 4 </answer>",
        },
    ]


def test_trl_conversational_rows(tmp_path):
    rows = trl_rows(tmp_path)
    rows[1]["images"][1]["bytes"] = None  # JSON holds no bytes: the in-memory test below gives them
    rows[1]["images"][1]["path"] = "imgs/r.png"
    write_lines(tmp_path / "chat.jsonl", rows)
    first, second = samples(open_source(str(tmp_path / "chat.jsonl")))
    assert (first.question, first.answer, colours(first)) == ("How many objects?", 3, [RED])
    assert (second.question, second.answer) == ("Left, then\nHow many objects?", 4)
    assert colours(second) == [RED, RED]


def test_trl_rows_in_memory_take_bytes_and_pil_images(tmp_path):
    rows = trl_rows(tmp_path)
    rows[1]["images"][0]["path"] = str(tmp_path / "imgs" / "r.png")  # no data file: paths are as given
    rows[1]["images"][1]["bytes"] = png(BLUE)
    rows[0]["images"] = [Image.new("RGB", (5, 5), GREEN)]
    source = InMemorySource(rows, get_task(), name="chat")
    assert colours(source[0]) == [GREEN] and colours(source[1]) == [RED, BLUE]
    assert source.columns_of(source[1].id) == {"solution": "<answer> 4 </answer>"}


def test_messages_with_plain_text_and_a_named_answer_column(tmp_path):
    save_image(tmp_path / "g.png", GREEN)
    row = {"messages": [{"role": "user", "content": "How many?"}], "images": ["g.png"], "count": 6}
    write_lines(tmp_path / "m.jsonl", [row])
    sample = open_source(str(tmp_path / "m.jsonl"), columns={"answer": "count"})[0]
    assert (sample.question, sample.answer, colours(sample)) == ("How many?", 6, [GREEN])


def test_a_few_shot_prompt_asks_its_last_user_turn(tmp_path):
    save_image(tmp_path / "r.png", RED)
    ask = {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "How many?"}]}
    prompt = [{"role": "user", "content": "Two apples: how many?"}, {"role": "assistant", "content": "2"}, ask]
    write_lines(tmp_path / "f.jsonl", [{"prompt": prompt, "images": ["r.png"], "solution": "<answer> 5 </answer>"}])
    sample = open_source(str(tmp_path / "f.jsonl"))[0]
    assert (sample.question, sample.answer, colours(sample)) == ("How many?", 5, [RED])


def test_a_placeholder_count_mismatch_names_the_row(tmp_path):
    rows = trl_rows(tmp_path)
    rows[0]["images"] = ["imgs/r.png", "imgs/r.png"]
    write_lines(tmp_path / "chat.jsonl", rows)
    with pytest.raises(BadSample) as info:
        open_source(str(tmp_path / "chat.jsonl"))[0]
    assert one_line(info) == "chat.jsonl#0: 1 image placeholder(s) in the conversation but 2 image(s)"


# ------------------------------------------------------------------ LLaVA conversations


def llava_rows():
    return [
        {
            "id": "a",
            "image": "pics/r.png",
            "conversations": [
                {"from": "human", "value": "<image>\nHow many cubes?"},
                {"from": "gpt", "value": "3"},
                {"from": "human", "value": "And spheres?"},
                {"from": "gpt", "value": "9"},
            ],
        },
        {
            "id": "b",
            "image": "pics/g.png",
            "conversations": [{"from": "human", "value": "Count them. <image>"}, {"from": "gpt", "value": "5"}],
        },
    ]


def test_llava_conversations_relative_to_the_file_or_data_images(tmp_path):
    for folder in (tmp_path / "data", tmp_path / "elsewhere"):
        save_image(folder / "pics" / "r.png", RED)
        save_image(folder / "pics" / "g.png", GREEN)
    (tmp_path / "data" / "llava.json").write_text(json.dumps(llava_rows()))
    got = samples(open_source(str(tmp_path / "data" / "llava.json")))
    assert [(s.question, s.answer, colours(s)) for s in got] == [
        ("How many cubes?", 3, [RED]),
        ("Count them.", 5, [GREEN]),
    ]
    (tmp_path / "data" / "pics" / "r.png").unlink()
    moved = open_source(str(tmp_path / "data" / "llava.json"), images=str(tmp_path / "elsewhere"))
    assert colours(moved[0]) == [RED]


def test_a_question_column_beside_a_conversation_is_one_line_naming_the_mapping(tmp_path):
    rows = [{**row, "question": "q?"} for row in llava_rows()]
    (tmp_path / "both.json").write_text(json.dumps(rows))
    with pytest.raises(ValueError) as info:
        open_source(str(tmp_path / "both.json"))
    line = one_line(info)
    assert "data.columns.question=question" in line and "data.columns.conversation=conversations" in line
    sample = open_source(str(tmp_path / "both.json"), columns={"conversation": "conversations"})[0]
    assert sample.question == "How many cubes?"


@pytest.mark.parametrize(
    "row",
    [
        {"image": "x.png", "question": "q?", "label": 3},
        {
            "prompt": [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "q?"}]}],
            "images": ["x.png"],
        },
    ],
)
def test_no_answer_column_is_one_line_naming_the_mapping(tmp_path, row):
    write_lines(tmp_path / "rows.jsonl", [row])
    with pytest.raises(ValueError) as info:
        open_source(str(tmp_path / "rows.jsonl"))
    assert "data.columns.answer=COLUMN" in one_line(info)


# ------------------------------------------------------------------ several files, splits


def test_a_glob_and_a_list_of_files_name_each_files_rows(tmp_path):
    for name, answer in (("a", 3), ("b", 4)):
        save_image(tmp_path / name / "x.png", RED if name == "a" else GREEN)
        write_lines(tmp_path / name / "rows.jsonl", [{"image": "x.png", "question": f"{name}?", "answer": answer}])
    by_glob = samples(open_source(str(tmp_path / "*" / "rows.jsonl")))
    assert [(s.id, s.answer, colours(s)) for s in by_glob] == [
        ("a/rows.jsonl#0", 3, [RED]),
        ("b/rows.jsonl#0", 4, [GREEN]),
    ]
    listed = open_source([str(tmp_path / "b" / "rows.jsonl"), str(tmp_path / "a" / "rows.jsonl")])
    assert [s.answer for s in samples(listed)] == [4, 3]
    with pytest.raises(FileNotFoundError, match="no data files match"):
        open_source(str(tmp_path / "*" / "none.jsonl"))
    with pytest.raises(ValueError) as info:
        open_source(str(tmp_path / "*" / "rows.jsonl"), split="test")
    assert one_line(info).endswith("has no split 'test'; it has train (set data.split)")


def test_a_folder_of_data_files_splits_by_their_names(tmp_path):
    save_image(tmp_path / "x.png", RED)
    write_lines(tmp_path / "train.jsonl", [{"image": "x.png", "question": "q?", "answer": 3}] * 2)
    write_lines(tmp_path / "test.jsonl", [{"image": "x.png", "question": "q?", "answer": 8}])
    assert [s.answer for s in samples(open_source(str(tmp_path)))] == [3, 3]
    assert [s.answer for s in samples(open_source(str(tmp_path), split="test"))] == [8]
    with pytest.raises(ValueError) as info:
        open_source(str(tmp_path), split="dev")
    assert one_line(info).endswith("has no split 'dev'; it has train, test (set data.split)")


def test_a_hub_set_without_the_split_is_one_line(monkeypatch):
    # Offline: `datasets`' own refusal, as the hub gives it, stands in for the hub.
    def load_dataset(spec, split):
        raise ValueError(f"Unknown split \"{split}\". Should be one of ['train', 'test'].")

    monkeypatch.setattr(datasets, "load_dataset", load_dataset)
    with pytest.raises(ValueError) as info:
        open_source("org/set", split="dev")
    assert one_line(info) == "org/set: Unknown split \"dev\". Should be one of ['train', 'test']. (set data.split)"


def test_a_folder_of_only_images_says_what_it_lacks(tmp_path):
    save_image(tmp_path / "x.png", RED)
    with pytest.raises(ValueError, match="holds no data files .*no image metadata"):
        open_source(str(tmp_path))


# ------------------------------------------------------------------ a run from a new layout


@pytest.mark.slow
def test_train_from_an_image_folder_through_the_cli(tmp_path):
    from vlm_grpo.cli import app
    from vlm_grpo.lab.scenes import render_scene

    rows = []
    for i in range(8):
        image, scene = render_scene("lab-clevr", i, size=112)
        (tmp_path / "set" / "scenes").mkdir(parents=True, exist_ok=True)
        image.save(tmp_path / "set" / "scenes" / f"{i}.PNG")
        rows.append({"file_name": f"scenes/{i}.PNG", "question": scene.question, "answer": scene.count})
    write_lines(tmp_path / "set" / "metadata.jsonl", rows)
    run = tmp_path / "run"
    args = [f"data.train={tmp_path / 'set'}", "max_steps=2", "save_steps=2", f"output_dir={run}"]
    args += ["num_generations=4", "prompts_per_step=2", "log_completions_steps=1"]
    result = CliRunner().invoke(app, ["train", str(LAB_CONFIG), *LAB, *args])
    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [line["step"] for line in lines] == [1, 2] and (run / "checkpoint-2").is_dir()
    drawn = {json.loads(line)["prompt_id"] for line in (run / "completions.jsonl").read_text().splitlines()}
    assert drawn and drawn <= {f"set#{i}" for i in range(8)}  # the folder's rows, none skipped
    assert lines[-1]["data/skipped"] == 0


# ------------------------------------------------------------------ every layout trains


def _saved(tmp_path):
    rows_dataset([3, 4]).save_to_disk(str(tmp_path / "saved"))
    return tmp_path / "saved"


def _table(tmp_path, name):
    save_image(tmp_path / "imgs" / "r.png", RED)
    table = datasets.Dataset.from_list([{"image": "imgs/r.png", "question": "Red?", "answer": a} for a in (3, 4)])
    if name.endswith(".csv"):
        table.to_csv(str(tmp_path / name), index=False)
    else:
        table.to_json(str(tmp_path / name))
    return tmp_path / name


def _trl(tmp_path):
    rows = trl_rows(tmp_path)
    rows[1]["images"][1] = {"bytes": None, "path": "imgs/r.png"}
    return write_lines(tmp_path / "chat.jsonl", rows)


def _llava(tmp_path):
    save_image(tmp_path / "pics" / "r.png", RED)
    save_image(tmp_path / "pics" / "g.png", GREEN)
    (tmp_path / "llava.json").write_text(json.dumps(llava_rows()))
    return tmp_path / "llava.json"


def _video_folder(tmp_path):
    root = tmp_path / "clips"
    rows = []
    for i, name in enumerate(["a/one.MP4", "two.webm"]):
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        write_video(root / name, frames=4, size=(56, 40))
        rows.append({"file_name": name, "question": "How many colours?", "answer": i + 1})
    datasets.Dataset.from_list(rows).to_json(str(root / "metadata.jsonl"))
    return root


LAYOUT_WRITERS = {
    "save_to_disk": _saved,
    "jsonl by datasets": lambda tmp: _table(tmp, "rows.jsonl"),
    "csv by datasets": lambda tmp: _table(tmp, "rows.csv"),
    "trl chat rows": _trl,
    "llava json": _llava,
    "video folder": _video_folder,
}


@pytest.mark.slow
@pytest.mark.parametrize("layout", list(LAYOUT_WRITERS))
def test_every_layout_trains_a_step(tmp_path, layout):
    """Each layout, written by `datasets` (or as TRL's and LLaVA's files are), trains a step unchanged."""
    from vlm_grpo.config import load_config
    from vlm_grpo.training.trainer import Trainer

    data = LAYOUT_WRITERS[layout](tmp_path)
    run = tmp_path / "run"
    overrides = ["model=tiny-qwen2-vl", f"data.train={data}", "data.eval_holdout=0", "num_generations=2"]
    overrides += ["prompts_per_step=2", "max_completion_length=4", "max_steps=1", "save_steps=1"]
    overrides += ["progress=false", "report_to=[]", "video.max_frames=4", f"output_dir={run}"]
    Trainer(load_config(None, overrides)).train()
    lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [line["step"] for line in lines] == [1] and lines[0]["data/skipped"] == 0
    assert (run / "checkpoint-1" / "model.safetensors").is_file()
