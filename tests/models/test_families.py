"""Gemma 3, SmolVLM and LLaVA-OneVision train as the Qwen families do: tiny real-architecture
models, processors built and reloaded without torchvision, each family's own chat template and
turn end, placeholder suppression and `vlm-grpo train`, by name and from a saved folder.

Their passes are per row (no shared prefix), so the shared-pass checks of
tests/rollout/test_logprob_sharing.py do not apply to them."""

import json
import time

import pytest
import torch

from support import lab_samples, train_two_steps
from vlm_grpo.models import load_model_and_processor, registered_models
from vlm_grpo.models.families import adapter_for, family_named
from vlm_grpo.models.tiny import build_tiny, build_tokenizer, with_special_tokens
from vlm_grpo.rollout import completion_logprobs, encode_prompts, generate
from vlm_grpo.tasks.styles import DEFAULT, R1V

CPU = torch.device("cpu")

# family: (model_type, turn end, the placeholder tokens that must never be sampled)
FAMILIES = {
    "gemma3": ("gemma3", "<end_of_turn>", ["<image_soft_token>", "<start_of_image>", "<end_of_image>"]),
    "smolvlm": (
        "smolvlm",
        "<end_of_utterance>",
        ["<image>", "<fake_token_around_image>", "<global-img>", "<row_1_col_1>", "<row_6_col_6>"],
    ),
    "llava-onevision": ("llava_onevision", "<|im_end|>", ["<image>", "<video>"]),
}
NAMES = list(FAMILIES)


@pytest.mark.parametrize("family", NAMES)
def test_tiny_is_the_family_architecture(family):
    start = time.perf_counter()
    model, processor = build_tiny(family)
    assert time.perf_counter() - start < 10
    assert model.config.model_type == FAMILIES[family][0] and adapter_for(model) is family_named(family)
    assert sum(p.numel() for p in model.parameters()) < 1_000_000
    prompts = encode_prompts(processor, R1V, lab_samples(), CPU)
    image_id = processor.tokenizer.convert_tokens_to_ids(FAMILIES[family][2][0])
    assert (prompts.inputs["input_ids"] == image_id).sum(1).min() > 0  # each prompt holds its image's tokens
    assert prompts.inputs["pixel_values"].size(0) == 2  # one image (with its tiles) per prompt


@pytest.mark.parametrize("family", NAMES)
def test_template_ends_the_turn_with_the_family_token(family):
    model, processor = build_tiny(family)
    turn_end = FAMILIES[family][1]
    messages = [
        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "How many?"}]},
        {"role": "assistant", "content": [{"type": "text", "text": "three"}]},
    ]
    rendered = processor.apply_chat_template(messages, tokenize=False)
    assert rendered[rendered.rindex("three") + len("three") :].startswith(turn_end)
    adapter = adapter_for(model)
    turn_end_id = processor.tokenizer.convert_tokens_to_ids(turn_end)
    assert adapter.turn_end_id(processor) == turn_end_id
    assert turn_end_id in adapter.end_token_ids(processor, model)
    # The system prompt (a plain string) is written, not dropped.
    prompt = processor.apply_chat_template(R1V.messages("How many?"), add_generation_prompt=True, tokenize=False)
    assert R1V.system in prompt


@pytest.mark.parametrize("family", NAMES)
def test_vision_placeholders_are_never_sampled(family):
    model, processor = build_tiny(family)
    placeholders = processor.tokenizer.convert_tokens_to_ids(FAMILIES[family][2])
    assert set(placeholders) <= set(adapter_for(model).vision_token_ids(model))
    # Make every placeholder by far the likeliest token: sampling must still never pick one.
    forbidden = torch.tensor(adapter_for(model).vision_token_ids(model))
    plain = model.lm_head.forward  # the head's own function, as generation and the log-prob passes call it
    model.lm_head.forward = lambda hidden: plain(hidden).index_add(
        -1, forbidden, torch.full((*hidden.shape[:-1], len(forbidden)), 50.0)
    )
    prompts = encode_prompts(processor, DEFAULT, lab_samples(), CPU)
    completions, mask, _, _ = generate(model, processor, prompts, 3, 8, temperature=1.0)
    assert not torch.isin(completions, forbidden).any()
    logp = completion_logprobs(model, prompts, torch.arange(6), completions, mask, 3, 1.0, "none")
    assert torch.isfinite(logp[mask.bool()]).all()


STANDARD = {"gemma3": "Gemma3Processor", "smolvlm": "SmolVLMProcessor", "llava-onevision": "LlavaOnevisionProcessor"}


@pytest.mark.parametrize("family", NAMES)
def test_processor_saves_and_reloads_without_torchvision(tmp_path, family):
    _, processor = build_tiny(family)
    processor.save_pretrained(tmp_path)
    # The folder names the standard processor class, so other tools load it as a standard one.
    standard = json.loads((tmp_path / "processor_config.json").read_text())["processor_class"]
    assert standard == STANDARD[family]
    reloaded = family_named(family).load_processor(str(tmp_path), FAMILIES[family][0])
    assert type(reloaded) is type(processor) and reloaded.chat_template == processor.chat_template
    before = encode_prompts(processor, R1V, lab_samples(), CPU).inputs
    after = encode_prompts(reloaded, R1V, lab_samples(), CPU).inputs
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)


def test_extra_special_tokens_leave_the_default_tokenizer_alone():
    base = build_tokenizer()
    extended = with_special_tokens(base, {"eos_token": "<end_of_turn>", "boi_token": "<start_of_image>"})
    assert len(build_tokenizer()) == len(base) and "<end_of_turn>" not in base.get_vocab()
    assert {t: i for t, i in extended.get_vocab().items() if i < len(base)} == base.get_vocab()
    assert extended.boi_token_id == len(base) + 1 and extended.eos_token == "<end_of_turn>"
    text = "<think>I count three objects.</think><answer>3</answer>"
    assert extended(text)["input_ids"] == base(text)["input_ids"]


def test_tiny_names_are_registered():
    for family in NAMES:
        assert f"tiny-{family}" in registered_models()


@pytest.mark.slow
@pytest.mark.parametrize("family", NAMES)
def test_tiny_name_trains_with_demonstrations_ending_the_turn(tmp_path, family):
    trainer = train_two_steps(tmp_path, f"tiny-{family}", ["injection.mode=random"])
    turn_end = FAMILIES[family][1]
    text, tokens = trainer.remedy("injection").injector.demonstration(3)
    assert tokens[-1] == trainer.processor.tokenizer.convert_tokens_to_ids(turn_end) and turn_end not in text
    last = json.loads((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()[-1])
    assert last["injection/rate"] > 0


@pytest.mark.slow
@pytest.mark.parametrize("family", NAMES)
def test_saved_folder_trains(tmp_path, family):
    model, processor = build_tiny(family)
    folder = tmp_path / f"tiny-{family}"
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    loaded, _ = load_model_and_processor(str(folder), CPU, torch.float32)
    assert loaded.config.model_type == FAMILIES[family][0]
    train_two_steps(tmp_path, str(folder))


@pytest.mark.parametrize("family", NAMES)
def test_the_vision_tower_can_be_frozen(family):
    from vlm_grpo.models.loading import freeze_vision

    model, _ = build_tiny(family)
    freeze_vision(model)
    frozen = {n for n, p in model.named_parameters() if not p.requires_grad}
    assert frozen and all("vision" in n for n in frozen)
    assert any(p.requires_grad for n, p in model.named_parameters() if "language_model" in n or "text_model" in n)
