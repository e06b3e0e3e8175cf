"""Prompt styles as data: how a question is put to the model and how its answer should look.

`default` is the study's weak baseline (the bare question, ~14 % of Qwen2-VL-2B's answers hold a
number); `r1v` is its strong baseline (R1-V's system prompt and user suffix, ~99 %); `r1v_eval` is
R1-V's SuperCLEVR evaluation prompt (no system prompt of its own, the question followed by "First
output the thinking process ..."), so greedy results compare with R1-V's published ones; `custom`
is the user's own template. A style is built for a task: the task says what the final answer is
called in the r1v instruction, how an answer in format looks, and the reasoning r1v
demonstrations use. A style also says how a correct answer is written, which is what guidance
injection inserts, and what "in format" means for it (a bare answer; think/answer tags).
A new style is one builder registered with `register_style`.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any

from ..config import PromptConfig
from ..config_checks import check_named
from ..registry import Registry
from ..tools import Tool
from ..tools.calls import instructions
from .base import Task
from .counting import CountingTask

R1V_SYSTEM = (
    "A conversation between User and Assistant. The user asks a question, and the Assistant "
    "solves it. The assistant first thinks about the reasoning process in the mind and then "
    "provides the user with the answer. The reasoning process and answer are enclosed within "
    "<think> </think> and <answer> </answer> tags, respectively."
)
R1V_SUFFIX_TEMPLATE = (
    "Output the thinking process in <think> </think> and final answer ({answer_kind}) in <answer> </answer> tags."
)
R1V_SUFFIX = R1V_SUFFIX_TEMPLATE.format(answer_kind=CountingTask.answer_kind)
R1V_EVAL_SUFFIX_TEMPLATE = (
    "First output the thinking process in <think> </think> and final answer ({answer_kind}) in <answer> </answer> tags."
)
R1V_DEMONSTRATION = "<think>{reasoning}</think><answer>{answer}</answer>"


@dataclass(frozen=True)
class PromptStyle:
    name: str
    system: str | None
    """System prompt; None leaves the chat template's own default."""
    user_template: str
    """User text with `{question}`."""
    demonstration_template: str | None
    """How a correct answer is written, with `{answer}` (and `{reasoning}` for r1v)."""
    format_pattern: str
    """Regex that a completion in this style's format matches in full."""
    reasoning: tuple[str, ...] = CountingTask.reasoning
    """The task's short reasoning sentences, one drawn per demonstration."""
    write_answer: Callable[[Any], Any] = str
    """The task's `format_answer`: the ground truth as a demonstration writes it."""

    def messages(self, question: str, images: int = 1, videos: int = 0) -> list[dict]:
        """Chat messages for a question about `videos` videos and `images` images (they come first, videos
        then images, in order, as in Qwen2-VL's examples)."""
        text = self.user_template.format(question=question)
        media = [{"type": "video"}] * videos + [{"type": "image"}] * images
        user = {"role": "user", "content": media + [{"type": "text", "text": text}]}
        return ([{"role": "system", "content": self.system}] if self.system else []) + [user]

    def demonstration(self, target: Any, rng: random.Random) -> str:
        """The ground truth written the way this style asks for."""
        if self.demonstration_template is None:
            raise ValueError(f"prompt style {self.name!r} has no demonstration template")
        answer = self.write_answer(target)
        return self.demonstration_template.format(answer=answer, reasoning=rng.choice(self.reasoning))

    def with_tools(self, tools: Mapping[str, Tool]) -> PromptStyle:
        """This style with the tools' instructions after the question (braces escaped for `format`)."""
        text = instructions(tools).replace("{", "{{").replace("}", "}}")
        return replace(self, user_template=f"{self.user_template}\n{text}")

    def format_ok(self, completion: str) -> bool:
        return re.fullmatch(self.format_pattern, completion.strip(), flags=re.DOTALL) is not None


def _default(cfg: PromptConfig, task: Task) -> PromptStyle:
    return PromptStyle(
        "default", None, "{question}", "{answer}", task.answer_pattern, task.reasoning, task.format_answer
    )


def _tagged(name: str, system: str | None, suffix_template: str, task: Task) -> PromptStyle:
    """A style whose answer goes in <think>/<answer> tags, the instruction naming the task's answer kind."""
    return PromptStyle(
        name,
        system,
        "{question} " + suffix_template.format(answer_kind=task.answer_kind),
        R1V_DEMONSTRATION,
        rf"<think>.*?</think>\s*<answer>\s*{task.answer_pattern}\s*</answer>",
        task.reasoning,
        task.format_answer,
    )


def _r1v(cfg: PromptConfig, task: Task) -> PromptStyle:
    return _tagged("r1v", R1V_SYSTEM, R1V_SUFFIX_TEMPLATE, task)


def _r1v_eval(cfg: PromptConfig, task: Task) -> PromptStyle:
    return _tagged("r1v_eval", None, R1V_EVAL_SUFFIX_TEMPLATE, task)


def _custom(cfg: PromptConfig, task: Task) -> PromptStyle:
    if not cfg.template or "{question}" not in cfg.template:
        raise ValueError("prompt.style=custom needs prompt.template containing {question}")
    demo = cfg.demonstration
    answer = rf"\s*{task.answer_pattern}\s*"
    pattern = re.escape(demo).replace(re.escape("{answer}"), answer) if demo else rf".*{task.answer_pattern}.*"
    return PromptStyle("custom", cfg.system, cfg.template, demo, pattern, task.reasoning, task.format_answer)


STYLES: Registry[Callable[[PromptConfig, Task], PromptStyle]] = Registry("prompt style")
check_named("prompt.style", STYLES)
for _name, _builder in (("default", _default), ("r1v", _r1v), ("r1v_eval", _r1v_eval), ("custom", _custom)):
    STYLES.register(_name, _builder)


def register_style(name: str, builder: Callable[[PromptConfig, Task], PromptStyle]) -> None:
    STYLES.register(name, builder)


def get_style(cfg: PromptConfig | str, task: Task | None = None) -> PromptStyle:
    """The style named by `cfg` (a PromptConfig or a style name), built for `task` (counting if None)."""
    if isinstance(cfg, str):
        cfg = PromptConfig(style=cfg)
    if cfg.style not in STYLES:
        raise ValueError(f"unknown prompt style {cfg.style!r}; choose {', '.join(STYLES.names())}")
    return STYLES.get(cfg.style)(cfg, task or CountingTask())


DEFAULT = get_style("default")
R1V = get_style("r1v")
