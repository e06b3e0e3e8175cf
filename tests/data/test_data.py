import io
import json

import numpy as np
import pytest
from PIL import Image

from vlm_grpo.data import BadSample, PromptStream, open_source, split_indices


def png_bytes(colour=(200, 10, 10), size=(40, 30)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, colour).save(buf, format="PNG")
    return buf.getvalue()


def write_generic(tmp_path, n=6):
    (tmp_path / "imgs").mkdir()
    lines = []
    for i in range(n):
        (tmp_path / "imgs" / f"{i}.png").write_bytes(png_bytes((i * 30, 0, 0)))
        lines.append(json.dumps({"image": f"imgs/{i}.png", "question": f"How many? #{i}", "answer": i + 3}))
    path = tmp_path / "train.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_generic_jsonl_relative_images(tmp_path):
    source = open_source(str(write_generic(tmp_path)))
    assert len(source) == 6
    sample = source[2]
    assert sample.answer == 5 and sample.question == "How many? #2"
    assert sample.load_images()[0].size == (40, 30)


def test_clevr_cogen_parquet(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = {
        "image": [{"bytes": png_bytes(), "path": None} for _ in range(4)],
        "problem": ["How many items are there in the image?"] * 4,
        "solution": ["<answer> 3 </answer>", "<answer> 10 </answer>", "<answer>4</answer>", "<answer> 7 </answer>"],
    }
    pq.write_table(pa.table(rows), tmp_path / "clevr.parquet")
    source = open_source(str(tmp_path / "clevr.parquet"))
    assert [source[i].answer for i in range(4)] == [3, 10, 4, 7]
    assert source[1].load_images()[0].mode == "RGB"
    folder = open_source(str(tmp_path))  # a folder of parquet files
    assert len(folder) == 4


def test_superclevr_question_file_with_images_root(tmp_path):
    images = tmp_path / "root" / "images"
    images.mkdir(parents=True)
    (images / "superCLEVR_new_025000.png").write_bytes(png_bytes())
    qfile = tmp_path / "superclevr.jsonl"
    qfile.write_text(
        json.dumps(
            {
                "image_path": "./images/superCLEVR_new_025000.png",
                "question": "How many different items are there in the image?",
                "ground_truth": 4,
            }
        )
        + "\n"
    )
    sample = open_source(str(qfile), images=str(tmp_path / "root"))[0]
    assert sample.answer == 4 and sample.load_images()[0].size == (40, 30)


def test_bad_rows_are_named(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps({"image": "missing.png", "question": "q", "answer": "three"}) + "\n")
    with pytest.raises(BadSample, match=r"bad.jsonl#0: answer 'three' is not an integer"):
        open_source(str(path))[0]
    path.write_text(json.dumps({"image": "missing.png", "question": "q", "answer": 3}) + "\n")
    with pytest.raises(BadSample, match="missing.png does not exist"):
        open_source(str(path))[0].load_images()[0]


def test_split_is_fixed_and_disjoint():
    train, held = split_indices(1000, 150)
    train2, held2 = split_indices(1000, 150)
    assert np.array_equal(held, held2) and len(held) == 150 and len(train) == 850
    assert not set(train.tolist()) & set(held.tolist())


def test_stream_is_seeded_and_resumes_exactly(tmp_path):
    source = open_source(str(write_generic(tmp_path, n=10)))
    train, _ = split_indices(len(source), 2)
    a = PromptStream(source, train, seed=3)
    first = [s.id for s in a.next_batch(5)]
    state = a.state_dict()
    rest = [s.id for s in a.next_batch(7)]  # crosses an epoch boundary
    b = PromptStream(source, train, seed=3)
    b.load_state_dict(state)
    assert [s.id for s in b.next_batch(7)] == rest
    assert first != [s.id for s in PromptStream(source, train, seed=4).next_batch(5)]


def test_stream_skips_and_counts_bad_rows(tmp_path):
    path = write_generic(tmp_path, n=4)
    (tmp_path / "imgs" / "1.png").write_bytes(b"not a png")
    source = open_source(str(path))
    logged = []
    stream = PromptStream(source, np.arange(4), seed=0, log=logged.append)
    ids = [s.id for s in stream.next_batch(6)]
    assert "train.jsonl#1" not in ids and stream.skipped >= 1 and "train.jsonl#1" in logged[0]
    strict = PromptStream(source, np.arange(4), seed=0, on_bad_sample="error")
    with pytest.raises(BadSample, match="cannot be decoded"):
        strict.next_batch(6)


def test_lab_sources():
    clevr = open_source("lab-clevr")
    sample = clevr[5]
    assert 3 <= sample.answer <= 10 and sample.question == "How many items are there in the image?"
    assert clevr[5].load_images()[0].tobytes() == sample.load_images()[0].tobytes()
