"""Every layout users bring, with videos: a folder of videos beside `metadata.jsonl` / `metadata.csv`, .json
lists, JSON Lines and .csv files with a video column, `save_to_disk` folders (a path column, or `datasets`'
own `Video` feature), TRL's conversational rows with `{"type": "video"}` parts, LLaVA-Video conversations
with a `<video>` token. Each is written by the ecosystem's own tools (`datasets`' `to_json`, `to_csv`,
`save_to_disk`; PyAV for the videos), read through `open_source` as the trainer reads it, and its samples'
videos decode to the right frames (frame i of `write_video` has red 20 * i)."""

import json

import datasets
import pytest
from PIL import Image

from support import one_line, samples, write_video
from vlm_grpo.data import BadSample, open_source
from vlm_grpo.data.videos import FrameSampling

SAMPLING = FrameSampling(fps=2.0)  # 8 frames at 4 fps: frames 0, 2, 5, 7


def reds(sample) -> list[int]:
    """The red channel of each sampled frame of the sample's video (20 * its index, within MPEG-4's loss)."""
    video = sample.load_video(SAMPLING)
    assert video.indices == (0, 2, 5, 7), video.indices
    got = [frame.getpixel((10, 10))[0] for frame in video.frames]
    assert all(abs(red - 20 * i) <= 6 for red, i in zip(got, video.indices)), got
    return got


def clips(root, names):
    for name in names:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        write_video(root / name)
    return names


# ------------------------------------------------------------------ a folder of videos with metadata

NAMES = ["a/one.MP4", "a/b/two.webm", "three.avi", "four.MKV", "five.mov"]


@pytest.mark.parametrize("kind", ["jsonl", "csv"])
def test_a_video_folder_reads_its_metadata_at_any_depth_and_case(tmp_path, kind):
    root = tmp_path / "clips"
    rows = [
        {"file_name": name, "question": f"What moves in {name}?", "answer": i}
        for i, name in enumerate(clips(root, NAMES))
    ]
    table = datasets.Dataset.from_list(rows)
    if kind == "jsonl":
        table.to_json(str(root / "metadata.jsonl"))
    else:
        table.to_csv(str(root / "metadata.csv"), index=False)
    got = samples(open_source(str(root)))
    assert [(s.question, s.answer) for s in got] == [(r["question"], r["answer"]) for r in rows]
    assert all(s.load_images() == [] for s in got)  # a video in place of the image
    for sample in got:
        reds(sample)


def test_a_video_folder_with_split_folders_reads_the_named_split(tmp_path):
    for split, answer in (("train", 3), ("test", 7)):
        clips(tmp_path / split, ["x.mp4"])
        datasets.Dataset.from_list([{"file_name": "x.mp4", "question": "q?", "answer": answer}]).to_json(
            str(tmp_path / split / "metadata.jsonl")
        )
    assert open_source(str(tmp_path))[0].answer == 3
    held = open_source(str(tmp_path), split="test")[0]
    assert held.answer == 7 and reds(held)


def test_a_folder_whose_metadata_names_images_and_videos_is_one_line(tmp_path):
    clips(tmp_path, ["x.mp4"])
    Image.new("RGB", (8, 8)).save(tmp_path / "y.png")
    rows = [
        {"file_name": "x.mp4", "question": "q?", "answer": 1},
        {"file_name": "y.png", "question": "q?", "answer": 2},
    ]
    datasets.Dataset.from_list(rows).to_json(str(tmp_path / "metadata.jsonl"))
    with pytest.raises(ValueError) as info:
        open_source(str(tmp_path))
    assert "names both images and videos" in one_line(info)


# ------------------------------------------------------------------ .json, .jsonl and .csv files


@pytest.mark.parametrize("name", ["rows.json", "rows.jsonl", "rows.csv"])
def test_data_files_with_a_video_column(tmp_path, name):
    clips(tmp_path / "data", ["clips/a.mp4"])
    Image.new("RGB", (8, 8), (0, 200, 0)).save(tmp_path / "data" / "still.png")
    rows = [
        {"video": "clips/a.mp4", "image": "", "question": "What moves?", "answer": "3"},
        {"video": "clips/a.mp4", "image": "still.png", "question": "And here?", "answer": "4"},
    ]
    table, path = datasets.Dataset.from_list(rows), str(tmp_path / "data" / name)
    if name.endswith(".csv"):
        table.to_csv(path, index=False)
    else:
        table.to_json(path, lines=name.endswith(".jsonl"))
    first, second = samples(open_source(path))
    assert (first.question, first.answer, second.answer) == ("What moves?", 3, 4)
    assert first.video == str(tmp_path / "data" / "clips" / "a.mp4")  # relative to the file
    assert first.load_images() == []  # a blank image cell: the video alone
    assert reds(first) == reds(second) and [im.getpixel((4, 4)) for im in second.load_images()] == [(0, 200, 0)]


def test_a_video_path_column_beside_a_video_column_is_one_line(tmp_path):
    clips(tmp_path, ["a.mp4"])
    row = {"video": "a.mp4", "video_path": "a.mp4", "question": "q?", "answer": 1}
    datasets.Dataset.from_list([row]).to_json(str(tmp_path / "rows.jsonl"))
    with pytest.raises(ValueError) as info:
        open_source(str(tmp_path / "rows.jsonl"))
    assert one_line(info).endswith("name the one the prompt shows with data.columns.video=video")
    assert reds(open_source(str(tmp_path / "rows.jsonl"), columns={"video": "video_path"})[0])


# ------------------------------------------------------------------ save_to_disk


def test_a_saved_dataset_with_a_video_path_column_or_a_video_feature(tmp_path):
    clips(tmp_path / "saved", ["clips/a.mp4"])
    rows = {"video": ["clips/a.mp4", str(tmp_path / "saved" / "clips" / "a.mp4")], "question": ["q?"] * 2}
    datasets.Dataset.from_dict({**rows, "answer": [1, 2]}).save_to_disk(str(tmp_path / "saved"))
    got = samples(open_source(str(tmp_path / "saved")))  # a relative path: under the saved folder
    assert [s.answer for s in got] == [1, 2] and reds(got[0]) == reds(got[1])

    featured = datasets.Dataset.from_dict({**rows, "answer": [3, 4]}).cast_column("video", datasets.Video())
    featured = featured.select([1])  # the Video feature takes an absolute path
    datasets.DatasetDict({"train": featured, "test": featured}).save_to_disk(str(tmp_path / "featured"))
    sample = open_source(str(tmp_path / "featured"), split="test")[0]
    assert sample.answer == 4 and reds(sample)  # decoded by PyAV, not `datasets`' own video decoder


# ------------------------------------------------------------------ conversational rows (TRL)


def trl_video_rows():
    ask = {"type": "text", "text": "What moves?"}
    return [
        {  # a placeholder matched to the `videos` column
            "prompt": [{"role": "user", "content": [{"type": "video"}, ask]}],
            "videos": ["clips/a.mp4"],
            "solution": "<answer> 3 </answer>",
        },
        {  # a part carrying its own video (transformers' chat templates write `path`), beside an image
            "prompt": [
                {"role": "user", "content": [{"type": "image"}, {"type": "video", "path": "clips/b.webm"}, ask]}
            ],
            "images": ["still.png"],
            "videos": [],
            "solution": "<answer> 4 </answer>",
        },
    ]


def test_trl_conversational_rows_with_video_parts(tmp_path):
    clips(tmp_path, ["clips/a.mp4", "clips/b.webm"])
    Image.new("RGB", (8, 8), (0, 0, 200)).save(tmp_path / "still.png")
    rows = trl_video_rows()
    rows[0]["images"] = []
    datasets.Dataset.from_list(rows).to_json(str(tmp_path / "chat.jsonl"))
    first, second = samples(open_source(str(tmp_path / "chat.jsonl")))
    assert (first.question, first.answer, first.video) == ("What moves?", 3, str(tmp_path / "clips" / "a.mp4"))
    assert (second.answer, second.video) == (4, str(tmp_path / "clips" / "b.webm"))  # relative to the file
    assert reds(first) and reds(second) and [im.getpixel((4, 4)) for im in second.load_images()] == [(0, 0, 200)]


@pytest.mark.parametrize(
    "videos, message",
    [
        (["clips/a.mp4", "clips/a.mp4"], "1 video placeholder(s) in the conversation but 2 video(s)"),
        ([], "1 video placeholder(s) in the conversation but 0 video(s)"),
    ],
)
def test_a_video_placeholder_count_mismatch_names_the_row(tmp_path, videos, message):
    row = {**trl_video_rows()[0], "videos": videos}
    (tmp_path / "chat.jsonl").write_text(json.dumps(row) + "\n")
    with pytest.raises(BadSample) as info:
        open_source(str(tmp_path / "chat.jsonl"))[0]
    assert one_line(info) == f"chat.jsonl#0: {message}"


def test_two_videos_in_one_conversation_name_the_row(tmp_path):
    row = trl_video_rows()[0]
    row["prompt"][0]["content"].insert(0, {"type": "video"})
    row["videos"] = ["clips/a.mp4", "clips/a.mp4"]
    (tmp_path / "chat.jsonl").write_text(json.dumps(row) + "\n")
    with pytest.raises(BadSample, match=r"chat.jsonl#0: 2 videos in the conversation; a prompt shows one video"):
        open_source(str(tmp_path / "chat.jsonl"))[0]


def test_chat_rows_with_both_video_columns_is_one_line_naming_the_mapping(tmp_path):
    row = {**trl_video_rows()[0], "video": "clips/a.mp4"}
    (tmp_path / "chat.jsonl").write_text(json.dumps(row) + "\n")
    with pytest.raises(ValueError) as info:
        open_source(str(tmp_path / "chat.jsonl"))
    assert one_line(info).endswith("with data.columns.video=videos")


# ------------------------------------------------------------------ LLaVA-Video conversations


def test_llava_video_conversations(tmp_path):
    clips(tmp_path / "data", ["clips/a.mp4"])
    rows = [
        {
            "id": "v0",
            "video": "clips/a.mp4",
            "conversations": [
                {"from": "human", "value": "<video>\nWhat moves?"},
                {"from": "gpt", "value": "2"},
            ],
        }
    ]
    datasets.Dataset.from_list(rows).to_json(str(tmp_path / "data" / "llava.json"), lines=False)
    (sample,) = samples(open_source(str(tmp_path / "data" / "llava.json")))
    assert (sample.question, sample.answer, sample.load_images()) == ("What moves?", 2, [])
    assert reds(sample)
