import random

import pytest
import torch

from vlm_grpo.config_sections import Schedule
from vlm_grpo.data import Sample
from vlm_grpo.guidance.injection import InjectionConfig, Injector, rows_to_inject
from vlm_grpo.models.tiny import build_tokenizer
from vlm_grpo.rollout import PromptBatch, Rollout
from vlm_grpo.tasks.rewards import Scorer
from vlm_grpo.tasks.styles import DEFAULT, R1V


@pytest.mark.parametrize("mode", ["random", "rate", "rescue"])
def test_k_is_within_one_to_g_minus_one(mode):
    rng = random.Random(0)
    cfg = InjectionConfig(mode=mode, rate=1.0)
    groups = [[False] * 8 for _ in range(500)]
    for rows in rows_to_inject(cfg, 1.0, groups, rng):
        assert 1 <= len(rows) <= 7 and len(set(rows)) == len(rows)
    ks = {len(r) for r in rows_to_inject(InjectionConfig(mode="random"), 1.0, groups, rng)}
    assert ks == set(range(1, 8))  # the study's rule: uniform over 1..G-1


def test_rate_mode_k_and_probability():
    rng = random.Random(1)
    plan = rows_to_inject(InjectionConfig(mode="rate"), 0.25, [[False] * 8 for _ in range(2000)], rng)
    injected = [len(r) for r in plan if r]
    assert set(injected) == {2}  # round(0.25 * 8)
    assert 0.2 < len(injected) / 2000 < 0.3
    plan = rows_to_inject(InjectionConfig(mode="rate", rows=3), 1.0, [[False] * 8] * 10, rng)
    assert all(len(r) == 3 for r in plan)


def test_rescue_touches_only_groups_without_a_correct_answer():
    groups = [[False] * 4, [True, False, False, False], [False] * 4, [False, False, True, True]]
    for seed in range(50):
        plan = rows_to_inject(InjectionConfig(mode="rescue"), 1.0, groups, random.Random(seed))
        assert plan[1] == [] and plan[3] == []
        assert plan[0] and plan[2]


def test_same_seed_same_rows_and_none_mode():
    groups = [[False] * 8 for _ in range(20)]
    a = rows_to_inject(InjectionConfig(mode="random"), 1.0, groups, random.Random(7))
    b = rows_to_inject(InjectionConfig(mode="random"), 1.0, groups, random.Random(7))
    assert a == b
    assert all(r == [] for r in rows_to_inject(InjectionConfig(mode="none"), 1.0, groups, random.Random(7)))
    assert all(r == [] for r in rows_to_inject(InjectionConfig(mode="random"), 0.0, groups, random.Random(7)))


def test_linear_decay_is_the_studys_schedule():
    cfg = InjectionConfig(mode="random", rate=Schedule("linear_decay"))
    assert cfg.strength(0, 1000, 0.0) == pytest.approx(0.8)
    assert cfg.strength(350, 1000, 0.0) == pytest.approx(0.4)
    assert cfg.strength(700, 1000, 0.0) == 0.0
    assert cfg.strength(999, 1000, 0.0) == 0.0


def test_linear_runs_to_the_last_step_and_serves_injection_too():
    cfg = InjectionConfig(mode="random", rate=Schedule("linear", initial=1.0, final=0.2))
    assert [round(cfg.strength(s, 5, 0.0), 6) for s in range(5)] == [1.0, 0.8, 0.6, 0.4, 0.2]
    assert cfg.strength(0, 1, 0.0) == 0.2  # a one-step run is at its end


def test_adaptive_follows_the_live_format_rate():
    cfg = InjectionConfig(mode="random", rate=Schedule("adaptive", low=0.3, high=0.9))
    assert cfg.strength(5, 100, 0.1) == 1.0
    assert cfg.strength(5, 100, 0.6) == pytest.approx(0.5)
    assert cfg.strength(5, 100, 0.95) == 0.0


@pytest.mark.parametrize("style", [DEFAULT, R1V])
def test_injected_rows_are_demonstrations_ending_with_end_of_turn(style):
    tok = build_tokenizer()
    end_id = tok.convert_tokens_to_ids("<|im_end|>")
    G, answer = 4, 6
    sample = Sample("s0", None, "How many items are there in the image?", answer, "test")
    scorer = Scorer(["counting"], None, style)
    texts = ["there are many objects"] * G
    ids = torch.full((G, 5), 7)
    rollout = Rollout(
        PromptBatch([sample], {}),
        G,
        ids,
        torch.ones(G, 5),
        torch.ones(G, dtype=torch.bool),
        texts,
        [scorer(t, answer) for t in texts],
    )
    injector = Injector(InjectionConfig(mode="random"), style, tok, end_id, tok.pad_token_id, seed=0)
    out = injector.apply(rollout, scorer, 1.0)
    injected = out.injected.nonzero().flatten().tolist()
    assert 1 <= len(injected) <= G - 1
    for row in injected:
        length = int(out.completion_mask[row].sum())
        tokens = out.completion_ids[row, :length].tolist()
        assert tokens[-1] == end_id
        assert tok.decode(tokens[:-1]) == out.texts[row]
        assert out.scores[row].reward == 1.0 and out.scores[row].format_ok
        assert not out.truncated[row]
    for row in set(range(G)) - set(injected):
        assert out.texts[row] == texts[row] and out.scores[row].reward == -1.0


def test_rescue_decides_on_correctness_not_the_weighted_reward():
    # Under answer+format, a group of wrong bare numbers scores 0 + 1 = 1 > 0 on every row; it has
    # no correct answer, so rescue injects it; a group with one correct row is left alone.
    tok = build_tokenizer()
    G = 4
    scorer = Scorer(["answer", "format"], None, DEFAULT)
    samples = [Sample(f"s{i}", None, "How many items are there in the image?", 6, "test") for i in range(2)]
    texts = ["5", "4", "3", "7"] + ["6", "4", "3", "7"]
    scores = [scorer(t, 6) for t in texts]
    assert all(s.reward == 1.0 for s in scores[:G]) and scores[G].reward == 2.0
    rollout = Rollout(
        PromptBatch(samples, {}),
        G,
        torch.full((2 * G, 3), 7),
        torch.ones(2 * G, 3),
        torch.zeros(2 * G, dtype=torch.bool),
        texts,
        scores,
    )
    injector = Injector(InjectionConfig(mode="rescue"), DEFAULT, tok, tok.eos_token_id, tok.pad_token_id, seed=0)
    for _ in range(10):
        out = injector.apply(rollout, scorer, 1.0)
        assert out.injected[:G].any() and not out.injected[G:].any()


def test_a_demonstration_that_loses_reward_is_refused():
    from vlm_grpo.config import PromptConfig
    from vlm_grpo.guidance import check_demonstrations
    from vlm_grpo.tasks.styles import get_style

    check_demonstrations(DEFAULT, Scorer(["answer", "format"], None, DEFAULT), [3, 7])
    check_demonstrations(R1V, Scorer(["answer_strict"], None, R1V), [3])
    with pytest.raises(
        ValueError, match=r"'default' writes the demonstration '3', which scores -1 under reward 'counting_strict'"
    ):
        check_demonstrations(DEFAULT, Scorer(["counting_strict"], None, DEFAULT), [3])
    custom = get_style(PromptConfig(style="custom", template="{question}", demonstration="{answer} of 10 objects"))
    with pytest.raises(ValueError, match="scores 0 under reward 'answer'"):
        check_demonstrations(custom, Scorer(["answer"], None, custom), [3])


def test_every_demonstration_a_style_may_write_is_one_per_reasoning_sentence():
    import random

    from vlm_grpo.guidance import every_demonstration

    texts = every_demonstration(R1V, 7)
    assert len(texts) == len(R1V.reasoning) > 1
    assert texts == [f"<think>{sentence}</think><answer>7</answer>" for sentence in R1V.reasoning]
    drawn = {R1V.demonstration(7, random.Random(seed)) for seed in range(200)}
    assert drawn == set(texts)  # what a run draws is exactly this set
    assert every_demonstration(DEFAULT, 7) == ["7"]  # no reasoning in the template: one text
