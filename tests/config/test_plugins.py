"""What a plug-in adds is as valid as what ships: an injection mode, a schedule, a prompt style, a
task, a remedy and a model family registered from outside the package are accepted by validation and train for two
steps; the remedy of `examples/replay_remedy.py` does what it says on literal rollouts."""

import dataclasses
import importlib
import json
import sys

import pytest
import torch

from support import ROOT, train_two_steps
from vlm_grpo.config import ConfigError, load_config
from vlm_grpo.data import Sample
from vlm_grpo.guidance import MODES, SCHEDULES, RemedyKit, StepContext, build_remedies, register_remedy
from vlm_grpo.guidance.injection import Mode
from vlm_grpo.models import adapter_for, registered_models
from vlm_grpo.rollout import PromptBatch, Rollout
from vlm_grpo.tasks import register_task
from vlm_grpo.tasks.counting import CountingTask
from vlm_grpo.tasks.rewards import Scorer
from vlm_grpo.tasks.styles import DEFAULT, STYLES, register_style

pytestmark = pytest.mark.slow


class LenientCounting(CountingTask):
    """Counting that also reads an answer written as a word."""

    name = "lenient_counting"
    WORDS = {"zero": 0, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6}

    def parse(self, completion: str, target=None):
        parsed = super().parse(completion, target)
        if parsed is None:
            words = [self.WORDS[w] for w in completion.lower().split() if w in self.WORDS]
            parsed = words[-1] if words else None
        return parsed


def _terse(cfg, task):
    default = STYLES.get("default")(cfg, task)
    return dataclasses.replace(default, name="terse", user_template="{question} Reply with the number only.")


MODES.register("one_row", Mode(lambda correct: True, lambda cfg, strength, size, rng: 1), replace=True)
SCHEDULES.register("half", lambda ramp, step, max_steps, rate: ramp.value / 2, replace=True)
register_style("terse", _terse)
register_task(LenientCounting.name, LenientCounting)


@pytest.mark.parametrize(
    "extra",
    [
        ["injection.mode=one_row"],
        ["injection.mode=random", "injection.rate.schedule=half"],
        ["prompt.style=terse"],
        ["task=lenient_counting"],
    ],
    ids=["mode", "schedule", "style", "task"],
)
def test_a_registered_name_validates_and_trains(extra, tmp_path):
    trainer = train_two_steps(tmp_path, "tiny-qwen2-vl", extra)
    if "injection.mode=one_row" in extra:
        assert trainer.remedy("injection").injector.cfg.mode == "one_row" and trainer.cfg.injection.mode == "one_row"


def test_names_are_read_from_the_registries_and_wrong_ones_reported_together():
    with pytest.raises(ConfigError) as raised:
        load_config(None, ["injection.mode=sometimes", "injection.rate.schedule=never", "prompt.style=shouty"])
    message = str(raised.value)
    assert "injection.mode='sometimes' is not one of none, one_row, random, rate, rescue" in message
    assert "injection.rate.schedule='never' is not one of" in message and "half" in message
    assert "prompt.style='shouty' is not one of" in message and "terse" in message
    assert load_config(None, ["prompt.style=r1v_eval"]).prompt.style == "r1v_eval"


# ---------------------------------------------------------------- a remedy from outside the package
EXAMPLES = ROOT / "examples"
PLUGINS = ROOT / "tests" / "plugins"


def _replay_module():
    if str(EXAMPLES) not in sys.path:
        sys.path.insert(0, str(EXAMPLES))
    return importlib.import_module("replay_remedy")


def _rollout(sample_id: str, texts: list[str], ids: list[list[int]]) -> Rollout:
    scorer = Scorer(["answer"], None, DEFAULT)
    width = max(len(row) for row in ids)
    padded = torch.tensor([row + [0] * (width - len(row)) for row in ids])
    mask = torch.tensor([[1.0] * len(row) + [0.0] * (width - len(row)) for row in ids])
    sample = Sample(sample_id, None, "How many?", 3, "test")
    return Rollout(
        PromptBatch([sample], {}), len(texts), padded, mask, torch.zeros(len(texts), dtype=torch.bool), texts,
        [scorer(t, 3) for t in texts],
    )  # fmt: skip


def test_a_remedy_of_ones_own_replays_an_earlier_success_into_a_group_that_missed():
    replay = _replay_module()
    cfg = load_config(None, ["remedies=[replay_remedy:SelfReplay]"])
    kit = RemedyKit(DEFAULT, Scorer(["answer"], None, DEFAULT), None, 9, 0, 0)
    [remedy] = [r for r in build_remedies(cfg, kit) if r.name == "replay"]
    assert isinstance(remedy, replay.SelfReplay) and remedy.min_reward == 1.0
    context = StepContext(0, 10, 0.5)
    first = _rollout("s", ["4", "3", "x"], [[5, 9], [6, 9], [7, 7, 7]])  # row 1 is correct
    assert remedy.after_draw(first, context, None) is first and remedy.best["s"][1] == [6, 9]
    missed = _rollout("s", ["x", "5", "2"], [[8], [8, 8], [8, 8, 8]])  # nothing correct
    out = remedy.after_draw(missed, StepContext(1, 10, 0.1), None)
    assert out.injected.tolist() == [False, False, True]  # the last sampled row replaced
    assert out.completion_ids[2].tolist()[:2] == [6, 9] and out.completion_mask[2].tolist() == [1, 1, 0]
    assert out.texts[2] == "3" and out.scores[2].correct and out.rewards.tolist() == [-1.0, 0.0, 1.0]
    other = _rollout("t", ["x", "x"], [[1], [1]])  # a prompt never solved: left alone
    assert remedy.after_draw(other, context, None) is other
    restored = replay.SelfReplay(cfg, kit)
    restored.load_state_dict(remedy.state_dict())
    assert restored.best == remedy.best


def test_a_remedy_named_by_import_path_or_registered_trains_and_is_checkpointed(tmp_path):
    replay = _replay_module()
    register_remedy(type("RegisteredReplay", (replay.SelfReplay,), {"name": "replay_registered"}), replace=True)
    for spec, name in (("replay_remedy:SelfReplay", "replay"), ("replay_registered", "replay_registered")):
        run = tmp_path / name
        trainer = train_two_steps(run, "tiny-qwen2-vl", [f"remedies=[{spec}]", f"{name}.min_reward=0"])
        assert trainer.remedy(name).min_reward == 0
        line = json.loads((run / "run" / "metrics.jsonl").read_text().splitlines()[-1])
        assert "replay/rows" in line and line["replay/prompts_kept"] >= 0
        state = torch.load(run / "run" / "checkpoint-2" / "trainer_state.pt", weights_only=False)
        assert set(state["remedies"]) == {"injection", name}
    with pytest.raises(ConfigError, match="remedies entry 'nope' is not one of"):
        load_config(None, ["remedies=[nope]"])


# ---------------------------------------------------------------- a model family from outside the package
def test_a_family_registered_from_outside_gets_its_tiny_name_and_trains(tmp_path):
    if str(PLUGINS) not in sys.path:
        sys.path.insert(0, str(PLUGINS))
    importlib.import_module("llava_family").register()
    assert "tiny-llava" in registered_models()
    trainer = train_two_steps(tmp_path, "tiny-llava")
    assert adapter_for(trainer.model).family == "llava"
    assert trainer.adapter.turn_end_id(trainer.processor) == trainer.processor.tokenizer.convert_tokens_to_ids(
        "<|im_end|>"
    )
    # The demonstration ends with the family's own turn end, as the shipped families' do.
    text, tokens = trainer.remedy("injection").injector.demonstration(3)
    assert tokens[-1] == trainer.adapter.turn_end_id(trainer.processor) and "3" in text
