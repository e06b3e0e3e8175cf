"""The lab's clips (vlm_grpo.lab.clips): deterministic, one object in view per frame, the answer the number
of objects that came, and the registered sets that show them."""

import json
from collections import Counter

import numpy as np
import pytest

from support import LAB, LAB_CONFIG, run_cli
from vlm_grpo.data import open_source
from vlm_grpo.lab import clips, scenes
from vlm_grpo.tasks import get_task


def _pixels(image) -> np.ndarray:
    return np.asarray(image, dtype=np.int16)


def test_a_clip_is_the_same_every_time_and_differs_by_seed():
    a, b, other = (clips.render_clip("lab-clips", seed) for seed in (7, 7, 8))
    assert a.objects == b.objects and a.shown == b.shown
    assert all((_pixels(x) == _pixels(y)).all() for x, y in zip(a.frames, b.frames))
    assert (a.objects, a.shown) != (other.objects, other.shown)


@pytest.mark.parametrize("name", list(clips.LOOKS))
def test_the_answer_is_the_number_of_objects_that_came_one_at_a_time(name):
    counts = Counter()
    for seed in range(60):
        clip = clips.render_clip(name, seed)
        counts[clip.count] += 1
        assert len(clip.frames) == clips.FRAMES and all(f.size == (clips.SIZE, clips.SIZE) for f in clip.frames)
        # every object has its turn, in order, each one run of frames: the answer is the number of arrivals
        assert clip.shown[0] == 0 and clip.shown[-1] == clip.count - 1
        assert all(b - a in (0, 1) for a, b in zip(clip.shown, clip.shown[1:]))
        for before, after in zip(clip.objects, clip.objects[1:]):  # an arrival always shows
            assert before.color != after.color
    assert set(counts) == set(range(clips.COUNTS[0], clips.COUNTS[1] + 1))


@pytest.mark.parametrize("name", list(clips.LOOKS))
def test_no_frame_shows_more_than_the_one_object_in_view(name):
    """Every pixel that differs from the bare floor lies within the shown object's footprint: one frame
    never holds the answer of a clip with more than one object."""
    look = clips.LOOKS[name]
    floor = _pixels(scenes.draw_objects(look, (), clips.SIZE))
    yy, xx = np.indices(floor.shape[:2])
    for seed in range(20):
        clip = clips.render_clip(name, seed)
        for frame, index in zip(clip.frames, clip.shown):
            o = clip.objects[index]
            drawn = (np.abs(_pixels(frame) - floor) > 8).any(axis=2)
            assert drawn.any()
            assert (np.hypot(xx[drawn] - o.x, yy[drawn] - o.y) <= 1.6 * o.size + 2).all()


def test_the_sets_are_registered_and_show_the_clip_or_its_middle_frame():
    task = get_task()
    whole, transfer, one = (open_source(n, task=task) for n in ("lab-clips", "lab-clips-transfer", "lab-clips-frame"))
    sample, single = whole[3], one[3]
    clip = clips.render_clip("lab-clips", 3)
    assert sample.image is None and sample.load_images() == [] and sample.answer == clip.count
    assert sample.question == clips.QUESTION and len(sample.video) == clips.FRAMES
    assert single.answer == clip.count and len(single.video) == 1 and single.domain == "lab-clips-frame"
    assert (_pixels(single.video[0]) == _pixels(clip.frames[clips.FRAMES // 2])).all()
    assert transfer[3].domain == "lab-clips-transfer" and transfer[3].question in clips.TRANSFER_QUESTIONS
    assert whole.always_split and len(whole) == len(transfer) == 1_000_000


def test_the_answer_texts_hold_the_count_in_words_or_in_tags():
    import random

    from vlm_grpo.lab.texts import parse_count_word
    from vlm_grpo.tasks.counting import parse_answer

    rng = random.Random(0)
    for seed in range(20):
        clip = clips.render_clip("lab-clips", seed)
        text = clips.verbose(clip, rng)
        assert parse_count_word(text) == clip.count and parse_answer(text) is None
        assert parse_answer(clips.r1v(clip, rng)) == clip.count


def test_the_clip_mix_draws_frames_under_both_prompts_with_the_cold_start_s_answers():
    import random

    from vlm_grpo.lab.pretrain import Mix, make_example

    rng, styles = random.Random(0), Counter()
    for seed in range(2_000_000, 2_000_060):
        frames, style, question, answer = make_example(rng, seed, Mix(0.025, clips=True))
        styles[style.name] += 1
        assert len(frames) == clips.FRAMES and question in (clips.QUESTION, *clips.TRANSFER_QUESTIONS)
        assert style.name == "r1v" or not any(c.isdigit() for c in answer) or answer.isdigit()
    assert styles["r1v"] >= 10 and styles["default"] >= 30


def test_pretraining_on_clips_continues_an_image_base_into_one_that_takes_videos(tmp_path):
    import torch

    from vlm_grpo.lab import models
    from vlm_grpo.lab.pretrain import pretrain
    from vlm_grpo.models import load_model_and_processor
    from vlm_grpo.rollout import encode_prompts, generate
    from vlm_grpo.tasks.styles import DEFAULT

    init = models.path_of("lab-base-cold")
    out = pretrain(tmp_path / "video", 0.025, steps=2, batch_size=2, progress=False, init=init, clips=True)
    model, processor = load_model_and_processor(str(out), torch.device("cpu"), torch.float32)
    assert "<|video_pad|>" in processor.chat_template
    prompts = encode_prompts(processor, DEFAULT, [open_source("lab-clips")[5]], torch.device("cpu"))
    assert (prompts.inputs["input_ids"] == model.config.video_token_id).sum() == 36  # 4 frame pairs x 3 x 3
    _, _, _, texts = generate(model, processor, prompts, 1, 4, temperature=None)
    assert len(texts) == 1


@pytest.mark.slow
def test_vlm_grpo_train_runs_two_steps_on_clips_from_the_video_base(tmp_path):
    run = ["model=lab-base-video", "data.train=lab-clips", "max_steps=2", "num_generations=4", "prompts_per_step=2"]
    result = run_cli("train", str(LAB_CONFIG), *LAB, *run, "injection.mode=random", f"output_dir={tmp_path}")
    assert result.returncode == 0, result.stderr[-2000:]
    lines = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [line["step"] for line in lines] == [1, 2] and lines[-1]["data/skipped"] == 0
    assert sum(line["injection/groups_injected"] for line in lines) > 0  # demonstrations on clips


def test_measure_reads_the_clip_sets_it_is_given():
    from vlm_grpo.lab.pretrain import measure

    out = measure("lab-base-video", n=2, batch_size=2, max_new_tokens=4, sets=("lab-clips", "lab-clips-frame"))
    assert out["default_sampled_clips"]["n"] == 16 and out["default_greedy_clips"]["n"] == 2
    assert out["r1v_greedy_clips"]["n"] == out["r1v_greedy_clips-frame"]["n"] == 2
