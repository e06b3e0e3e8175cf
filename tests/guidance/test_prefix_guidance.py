"""Prefix guidance: injected rows start with part of a demonstration and the policy continues them."""

import json

import pytest
import torch

from vlm_grpo.config import LossSettings, load_config
from vlm_grpo.config_sections import Schedule
from vlm_grpo.core.algo import LossStats
from vlm_grpo.core.losses import LossInputs, grpo_loss
from vlm_grpo.data import Sample
from vlm_grpo.guidance.injection import InjectionConfig, Injector
from vlm_grpo.guidance.schedules import scheduled
from vlm_grpo.lab.scenes import render_scene
from vlm_grpo.models.tiny import build_tiny, build_tokenizer
from vlm_grpo.rollout import HFEngine, PromptBatch, Rollout, SamplingParams, continue_prefixes, encode_prompts, generate
from vlm_grpo.tasks.rewards import Scorer
from vlm_grpo.tasks.styles import DEFAULT, R1V
from vlm_grpo.training.trainer import Trainer


def test_prefix_ratio_is_constant_or_linear_over_the_run():
    assert scheduled(InjectionConfig(prefix_ratio=0.3).prefix_ratio, 7, 10) == 0.3
    decaying = InjectionConfig(prefix_ratio=Schedule("linear", initial=0.9, final=0.1)).prefix_ratio
    assert [round(scheduled(decaying, s, 5), 6) for s in range(5)] == [0.9, 0.7, 0.5, 0.3, 0.1]
    assert scheduled(decaying, 0, 1) == 0.1  # a one-step run is at its end


def rollout_of(texts, answer, scorer, G):
    sample = Sample("s0", None, "How many items are there in the image?", answer, "test")
    return Rollout(
        PromptBatch([sample], {}),
        G,
        torch.full((G, 5), 7),
        torch.ones(G, 5),
        torch.zeros(G, dtype=torch.bool),
        texts,
        [scorer(t, answer) for t in texts],
    )


def test_prefix_rows_are_the_demonstrations_start_then_the_continuation():
    tok = build_tokenizer()
    end_id = tok.convert_tokens_to_ids("<|im_end|>")
    G, answer = 4, 6
    scorer = Scorer(["answer"], None, R1V)
    rollout = rollout_of(["no idea"] * G, answer, scorer, G)
    calls = []

    def complete(rows, prefixes):  # the policy's continuation: here a fixed wrong answer, then the end
        calls.append((rows, prefixes))
        tail = tok("<answer>5</answer>", add_special_tokens=False)["input_ids"]
        return [(tail + [end_id], False) for _ in rows]

    injector = Injector(InjectionConfig(mode="random", payload="prefix"), R1V, tok, end_id, tok.pad_token_id, seed=0)
    probe = Injector(InjectionConfig(mode="random"), R1V, tok, end_id, tok.pad_token_id, seed=0)
    full = probe.apply(rollout, scorer, 1.0)  # the same generator: the same plan and demonstrations
    out = injector.apply(rollout, scorer, 1.0, prefix=(0.5, complete))
    rows = out.injected.nonzero().flatten().tolist()
    assert rows == full.injected.nonzero().flatten().tolist() and calls[0][0] == rows
    for row, prefix in zip(rows, calls[0][1]):
        demo = full.completion_ids[row, : int(full.completion_mask[row].sum())].tolist()
        assert prefix == demo[: round(0.5 * (len(demo) - 1))]  # half the text tokens; the end token is not given
        length = int(out.completion_mask[row].sum())
        assert out.completion_ids[row, : len(prefix)].tolist() == prefix
        assert out.demo_tokens[row].tolist() == [True] * len(prefix) + [False] * (out.demo_tokens.size(1) - len(prefix))
        assert out.completion_ids[row, length - 1] == end_id and not out.truncated[row]
        assert out.texts[row].endswith("<answer>5</answer>")
        assert out.scores[row].reward == 0.0  # scored as a whole: the continuation's answer is wrong
    assert not out.demo_tokens[~out.injected].any()


def test_a_row_never_empty_and_truncation_carried():
    tok = build_tokenizer()
    G = 4
    scorer = Scorer(["answer"], None, DEFAULT)
    rollout = rollout_of(["no idea"] * G, 6, scorer, G)
    injector = Injector(InjectionConfig(mode="random", payload="prefix"), DEFAULT, tok, 1, tok.pad_token_id, seed=0)
    out = injector.apply(rollout, scorer, 1.0, prefix=(0.01, lambda rows, prefixes: [([9, 9], True) for _ in rows]))
    for row in out.injected.nonzero().flatten().tolist():
        assert int(out.demo_tokens[row].sum()) == 1 and bool(out.truncated[row])  # at least one token given


def test_continuing_a_greedy_completion_from_its_own_prefix_reproduces_it():
    torch.manual_seed(0)
    model, processor = build_tiny("qwen2-vl")
    samples = []
    for i in range(2):
        image, scene = render_scene("lab-clevr", i)
        samples.append(Sample(str(i), image, scene.question + " Count." * i, scene.count, "lab-clevr"))
    prompts = encode_prompts(processor, DEFAULT, samples, torch.device("cpu"))
    ids, mask, _, _ = generate(model, processor, prompts, 1, 10, temperature=None)
    given = [3, 6]  # different prefix lengths: rows are padded on the left again
    for sharing in ("prefix", "none"):
        out = continue_prefixes(
            HFEngine(model, processor, sharing),
            prompts,
            [0, 1],
            [ids[r, :n].tolist() for r, n in enumerate(given)],
            1,
            SamplingParams(1, 10, None),
        )
        for row, (tokens, truncated) in enumerate(out):
            whole = ids[row, : int(mask[row].sum())].tolist()
            assert ids[row, : given[row]].tolist() + tokens == whole
            assert len(tokens) == 10 - given[row] and truncated  # the random model never stops


def test_loss_treats_only_demonstration_tokens_as_off_policy():
    settings = LossSettings(off_policy="luffy")
    logp = torch.log(torch.tensor([[0.5, 0.5, 0.5], [0.5, 0.5, 0.5]]))
    injected = torch.tensor([True, False])
    demo = torch.tensor([[True, False, False], [False, False, False]])
    adv = torch.tensor([1.0, -1.0])
    mask = torch.ones(2, 3)
    stats = LossStats()
    loss = grpo_loss(logp, LossInputs(adv, mask, 6.0, 2, injected=injected, demo_tokens=demo), settings, stats)
    # luffy on the one demonstration token: -0.5/0.6; the rest ratio 1: -1 x2 (continuation), +1 x3
    assert loss.item() == pytest.approx((-0.5 / 0.6 - 2 + 3) / 6)
    assert stats.mean("ratio_continuation") == 1.0 and stats.sums["ratio_continuation"][1] == 2
    assert stats.sums["logp_injected"][1] == 1
    whole = grpo_loss(logp, LossInputs(adv, mask, 6.0, 2, injected=injected), settings)
    every = injected[:, None] & mask.bool()
    same = grpo_loss(logp, LossInputs(adv, mask, 6.0, 2, injected=injected, demo_tokens=every), settings)
    assert whole.item() == same.item()  # no mask given: every token of an injected row


@pytest.mark.slow
def test_prefix_share_follows_its_schedule_in_training(tmp_path):
    cfg = load_config(
        None,
        [
            "model=tiny-qwen2-vl",
            "prompt.style=r1v",
            "num_generations=4",
            "prompts_per_step=2",
            "max_completion_length=48",
            "progress=false",
            f"output_dir={tmp_path}",
            "max_steps=3",
            "save_steps=3",
            "num_iterations=2",
            "injection.mode=random",
            "injection.payload=prefix",
            "injection.prefix_ratio.schedule=linear",
            "injection.prefix_ratio.initial=0.9",
            "injection.prefix_ratio.final=0.2",
            "report_to=[]",
        ],
    )
    Trainer(cfg).train()
    lines = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [round(line["injection/prefix_ratio"], 6) for line in lines] == [0.9, 0.55, 0.2]
    for line in lines:
        # The random model rarely stops: the share of given tokens is what was given of the whole row.
        assert line["injection/prefix_tokens"] > 0 and line["injection/continuation_tokens"] > 0
        assert line["injection/prefix_share"] < 1
        assert "policy/ratio_mean_continuation" in line and "injection/continuation_logp_mean" in line
    assert lines[0]["injection/prefix_tokens"] > lines[-1]["injection/prefix_tokens"]


def test_a_prefix_that_fills_the_budget_leaves_no_room():
    torch.manual_seed(0)
    model, processor = build_tiny("qwen2-vl")
    image, scene = render_scene("lab-clevr", 0)
    prompts = encode_prompts(
        processor, DEFAULT, [Sample("0", image, scene.question, 3, "lab-clevr")], torch.device("cpu")
    )
    word = processor.tokenizer("There", add_special_tokens=False)["input_ids"][:1]  # a plain text token
    out = continue_prefixes(
        HFEngine(model, processor), prompts, [0, 1], [word * 6, word * 2], 2, SamplingParams(1, 6, None)
    )
    assert out[0] == ([], True)  # six tokens given of six: nothing sampled, cut at the limit
    assert len(out[1][0]) <= 4
