"""Video samples: frame sampling by time, decoding files (written by PyAV) and lists of frames once,
sizing each frame, and the `video` column of flat rows."""

import json

import pytest
from PIL import Image

from support import write_video
from vlm_grpo.data import BadSample, Sample, open_source
from vlm_grpo.data.videos import FrameSampling, Video, decode_video, frame_indices


def test_frame_indices_follow_fps_and_max_frames():
    assert frame_indices(8, 4.0, 2.0, 768) == [0, 2, 5, 7]  # 2 s at 2 fps: 4 frames, first to last
    assert frame_indices(8, 4.0, 100.0, 768) == list(range(8))  # never more frames than there are
    assert frame_indices(100, 25.0, 2.0, 3) == [0, 50, 99]  # max_frames caps, still spread evenly
    assert frame_indices(3, 30.0, 1.0, 768) == [0]  # a clip shorter than one sample keeps one frame


def test_a_video_file_decodes_to_the_sampled_frames(tmp_path):
    path = write_video(tmp_path / "clip.mp4", frames=8, fps=4)
    video = decode_video(str(path), FrameSampling(fps=2.0, max_frames=768), "row")
    assert video.total == 8 and video.fps == 4.0 and video.indices == (0, 2, 5, 7)
    assert video.timestamps == [0.0, 0.5, 1.25, 1.75]
    # Frame i's red channel is 20 * i (MPEG-4 is lossy: within a few levels).
    reds = [frame.getpixel((10, 10))[0] for frame in video.frames]
    assert all(abs(red - 20 * i) <= 6 for red, i in zip(reds, video.indices)), reds
    # Bytes decode the same as the file.
    again = decode_video(path.read_bytes(), FrameSampling(fps=2.0), "row")
    assert again.indices == video.indices and again.frames[1].tobytes() == video.frames[1].tobytes()


def test_frames_are_sized_once_and_lists_of_frames_are_a_clip(tmp_path):
    def half(height, width):
        return height // 2, width // 2

    path = write_video(tmp_path / "clip.mp4", frames=4, fps=2, size=(64, 48))
    video = decode_video(str(path), FrameSampling(fps=2.0, size=half), "row")
    assert {frame.size for frame in video.frames} == {(32, 24)}
    frames = [Image.new("RGB", (20, 10), (i, 0, 0)) for i in range(6)]
    (tmp_path / "f0.png").write_bytes(b"")  # a frame file that is not an image
    clip = decode_video(frames, FrameSampling(fps=2.0, max_frames=3), "row")
    assert clip.indices == (0, 2, 5) and clip.fps == 2.0 and clip.timestamps == [0.0, 1.0, 2.5]
    assert [f.getpixel((0, 0))[0] for f in clip.frames] == [0, 2, 5]
    with pytest.raises(BadSample, match="frame cannot be decoded"):
        decode_video([str(tmp_path / "f0.png")], FrameSampling(), "row")
    with pytest.raises(BadSample, match="does not exist"):
        decode_video(str(tmp_path / "missing.mp4"), FrameSampling(), "row")
    with pytest.raises(BadSample, match="cannot be decoded"):
        decode_video(b"not a video", FrameSampling(), "row")


def test_a_sample_decodes_its_video_once(tmp_path):
    path = write_video(tmp_path / "clip.mp4")
    sample = Sample("v", None, "What moves?", 1, "videos", video=str(path))
    assert sample.load_images() == []  # a video in place of the image
    decoded = sample.with_decoded_images(frames=FrameSampling(fps=1.0))
    assert isinstance(decoded.video, Video) and decoded.video.indices == (0, 7)
    assert decoded.load_video(FrameSampling(fps=100.0)) is decoded.video  # decoded once, kept
    with pytest.raises(BadSample, match="no image"):
        Sample("i", None, "q", 1, "d").load_images()


def test_jsonl_rows_with_a_video_column(tmp_path):
    write_video(tmp_path / "a.mp4")
    Image.new("RGB", (32, 32)).save(tmp_path / "a.png")
    rows = [
        {"video": "a.mp4", "question": "How many?", "answer": 2},
        {"video": "a.mp4", "image": "a.png", "question": "And here?", "answer": 3},
        {"video": None, "image": None, "question": "Nothing?", "answer": 1},
    ]
    (tmp_path / "v.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    source = open_source(str(tmp_path / "v.jsonl"))
    first, second = source[0], source[1]
    assert first.video == str(tmp_path / "a.mp4") and first.load_images() == []  # paths under the file's folder
    assert second.video == str(tmp_path / "a.mp4") and len(second.load_images()) == 1
    with pytest.raises(BadSample, match="no image and no video"):
        source[2]
    # Video-only rows under other column names, mapped.
    (tmp_path / "w.jsonl").write_text(json.dumps({"clip": "a.mp4", "q": "How many?", "a": 2}))
    mapped = open_source(str(tmp_path / "w.jsonl"), columns={"video": "clip", "question": "q", "answer": "a"})
    assert mapped[0].video == str(tmp_path / "a.mp4")


def test_parquet_rows_with_a_video_column(tmp_path):
    import datasets

    write_video(tmp_path / "a.mp4")
    rows = [{"video": "a.mp4", "question": "How many?", "answer": 2}]
    datasets.Dataset.from_list(rows).to_parquet(str(tmp_path / "v.parquet"))
    sample = open_source(str(tmp_path / "v.parquet"))[0]
    assert sample.video == str(tmp_path / "a.mp4")
    assert sample.with_decoded_images(frames=FrameSampling(fps=1.0)).video.indices == (0, 7)
