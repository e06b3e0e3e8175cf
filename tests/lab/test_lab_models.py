"""Tests for the counting lab's base models: answer texts, the SFT pre-training loop, shipped weights."""

import json
import random

import pytest
import torch
from safetensors.torch import load_file

from vlm_grpo.data import Sample
from vlm_grpo.lab import models as lab_models
from vlm_grpo.lab import texts
from vlm_grpo.lab.pretrain import pretrain
from vlm_grpo.lab.scenes import render_scene
from vlm_grpo.models import load_model_and_processor, registered_models
from vlm_grpo.rollout import encode_prompts, generate
from vlm_grpo.tasks.rewards import resolve
from vlm_grpo.tasks.styles import DEFAULT, R1V

SCENES = [
    render_scene(domain, seed, counts=(0, 16))[1] for domain in ("lab-clevr", "lab-superclevr") for seed in range(40)
]


@pytest.mark.parametrize("name", lab_models.BASES)
def test_shipped_base_loads_offline_and_generates(name):
    assert name in registered_models()
    model, processor = load_model_and_processor(name, torch.device("cpu"), torch.float32)
    image, scene = render_scene("lab-clevr", 7)
    samples = [Sample("s", image, scene.question, scene.count, "lab-clevr")]
    for style in (DEFAULT, R1V):
        prompts = encode_prompts(processor, style, samples, torch.device("cpu"))
        ids, mask, _, out = generate(model, processor, prompts, 2, 50, temperature=1.0)
        assert ids.shape[0] == 2 and all(isinstance(t, str) and t for t in out)
    card = json.loads((lab_models.path_of(name) / "lab_card.json").read_text())
    assert card["steps"] > 0 and 0 <= card["digit_share"] <= 1


def test_verbose_texts_have_no_digits_and_parse_back():
    rng = random.Random(0)
    for scene in SCENES:
        for _ in range(3):
            text = texts.verbose(scene, rng)
            assert not any(c.isdigit() for c in text), text
            assert texts.parse_count_word(text) == scene.count, text


def test_bare_and_r1v_texts_score_full_reward():
    rng = random.Random(1)
    for scene in SCENES:
        assert texts.bare(scene) == str(scene.count)
        text = texts.r1v(scene, rng)
        assert R1V.format_ok(text), text
        assert resolve("counting")(text, scene.count, R1V) == 1.0


def test_parse_count_word():
    assert texts.parse_count_word("I see two cubes. In total there are Seven objects.") == 7
    assert texts.parse_count_word("no count here") is None
    assert texts.parse_count_word("someone counted 3") is None  # words only, whole words only


def test_corpus_covers_prompts_and_questions():
    from vlm_grpo.lab.scenes import SUPERCLEVR_QUESTIONS
    from vlm_grpo.tasks.styles import R1V_SUFFIX, R1V_SYSTEM

    lines = set(texts.corpus())
    assert {R1V_SYSTEM, R1V_SUFFIX, *SUPERCLEVR_QUESTIONS} <= lines


def test_pretrain_saves_a_loadable_deterministic_model(tmp_path):
    runs = [pretrain(tmp_path / f"run{i}", digit_share=0.5, steps=5, batch_size=4, progress=False) for i in range(2)]
    card = json.loads((runs[0] / "lab_card.json").read_text())
    assert card["steps"] == 5 and card["digit_share"] == 0.5
    first, second = (load_file(str(r / "model.safetensors")) for r in runs)
    assert first.keys() == second.keys()
    assert all(torch.equal(first[k], second[k]) for k in first)
    model, processor = load_model_and_processor(str(runs[0]), torch.device("cpu"), torch.float32)
    image, scene = render_scene("lab-clevr", 3)
    prompts = encode_prompts(
        processor, DEFAULT, [Sample("s", image, scene.question, scene.count, "lab-clevr")], torch.device("cpu")
    )
    _, _, _, out = generate(model, processor, prompts, 1, 8, temperature=None)
    assert len(out) == 1


def test_the_tool_mix_teaches_the_call_for_the_grounding_question_and_answers_counting_without_one():
    from vlm_grpo.lab import clusters
    from vlm_grpo.lab.pretrain import Mix, make_example
    from vlm_grpo.tools import get_tools
    from vlm_grpo.tools.calls import has_call, parse_call

    rng, kinds = random.Random(0), {"call": 0, "count": 0}
    for seed in range(2_000_000, 2_000_040):
        image, style, question, answer = make_example(rng, seed, Mix(0.15, tool_share=1.0))
        assert "You may call a tool before you answer: crop(" in style.user_template.format(question=question)
        if question == clusters.LOCATE_QUESTION:  # a cluster canvas, answered by the call that crops its cell
            kinds["call"] += 1
            (canvas, _, box), *_ = [
                drawn
                for domain in ("lab-clevr", "lab-superclevr")
                if (drawn := clusters.render_cluster(domain, seed))[0].tobytes() == image.tobytes()
            ]
            call = parse_call(answer, get_tools(["crop"]))
            assert style.name in ("default", "r1v") and call.arguments == {"box": box} and call.end == len(answer)
        else:  # an ordinary scene counted in the r1v format, the tool offered and not called
            kinds["count"] += 1
            assert style.name == "r1v" and image.size == (112, 112) and not has_call(answer)
            assert R1V.format_ok(answer), answer
    assert kinds["call"] >= 10 and kinds["count"] >= 10


def test_a_mix_without_tools_draws_the_examples_the_shipped_bases_were_trained_on():
    import hashlib

    from vlm_grpo.lab.pretrain import Mix, make_example

    rng = random.Random(3)
    rows = [make_example(rng, 2_000_000 + i, Mix(0.15)) for i in range(40)]
    seen = repr([(style.name, q, a, image.tobytes().hex()[:64]) for image, style, q, a in rows])
    # the digest of the same 40 examples drawn by the pre-training code that built lab-base
    built_lab_base = "3e22f01e09ab7d04fc3395069c0a5eb21a464310d3c322976518a4a9c62126da"
    assert hashlib.sha256(seen.encode()).hexdigest() == built_lab_base


def test_pretraining_continues_a_saved_base_and_records_what_it_started_from(tmp_path):
    first = pretrain(tmp_path / "first", digit_share=0.5, steps=2, batch_size=2, progress=False)
    then = pretrain(
        tmp_path / "then", digit_share=0.5, steps=2, batch_size=4, progress=False, tool_share=0.5, init=first, seed=1
    )
    card = json.loads((then / "lab_card.json").read_text())
    assert card["init"] == "first" and card["tool_share"] == 0.5 and card["steps"] == 2
    _, old = load_model_and_processor(str(first), torch.device("cpu"), torch.float32)
    model, new = load_model_and_processor(str(then), torch.device("cpu"), torch.float32)
    call = '<tool_call>{"name": "crop"}</tool_call>'
    ids = new.tokenizer(call, add_special_tokens=False)["input_ids"]
    assert ids[0] == len(old.tokenizer) and ids[-1] == len(old.tokenizer) + 1  # each tag one new token
    assert ids[1:-1] == old.tokenizer('{"name": "crop"}', add_special_tokens=False)["input_ids"]
    assert new.tokenizer.decode(ids, skip_special_tokens=True) == call  # ordinary tokens: texts keep them
    assert model.get_input_embeddings().weight.shape[0] >= len(new.tokenizer)
    before, after = load_file(str(first / "model.safetensors")), load_file(str(then / "model.safetensors"))
    assert before.keys() == after.keys() and any(not torch.equal(before[k], after[k]) for k in before)
