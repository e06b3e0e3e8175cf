"""What a plug-in adds is as valid as what ships: an injection mode, a schedule, a prompt style and a
task registered from outside the package are accepted by validation and train for two steps."""

import dataclasses

import pytest

from support import train_two_steps
from vlm_grpo.config import ConfigError, load_config
from vlm_grpo.guidance import MODES, SCHEDULES
from vlm_grpo.guidance.injection import Mode
from vlm_grpo.tasks import register_task
from vlm_grpo.tasks.counting import CountingTask
from vlm_grpo.tasks.styles import STYLES, register_style
from vlm_grpo.training.setup import check_names

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
        ["injection.mode=random", "injection.schedule=half"],
        ["prompt.style=terse"],
        ["task=lenient_counting"],
    ],
    ids=["mode", "schedule", "style", "task"],
)
def test_a_registered_name_validates_and_trains(extra, tmp_path):
    trainer = train_two_steps(tmp_path, "tiny-qwen2-vl", extra)
    if "injection.mode=one_row" in extra:
        assert trainer.injector is not None and trainer.cfg.injection.mode == "one_row"


def test_names_are_read_from_the_registries_and_wrong_ones_reported_together():
    cfg = load_config(None, ["injection.mode=sometimes", "injection.schedule=never", "prompt.style=shouty"])
    with pytest.raises(ConfigError) as raised:
        check_names(cfg)
    message = str(raised.value)
    assert "injection.mode='sometimes' is not one of none, one_row, random, rate, rescue" in message
    assert "injection.schedule='never' is not one of" in message and "half" in message
    assert "prompt.style='shouty' is not one of" in message and "terse" in message
    assert check_names(load_config(None, ["prompt.style=r1v_eval"])).prompt.style == "r1v_eval"
