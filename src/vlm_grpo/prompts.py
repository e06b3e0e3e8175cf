"""Prompt styles as data: how a question is put to the model and how its answer should look.

`default` is the study's weak baseline (the bare question, ~14 % of Qwen2-VL-2B's answers hold a
number); `r1v` is its strong baseline (R1-V's system prompt and user suffix, ~99 %). A style also
says how a correct answer is written, which is what guidance injection inserts, and what "in
format" means for it (a bare number; think/answer tags).
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass

from .config import PromptConfig

R1V_SYSTEM = (
    "A conversation between User and Assistant. The user asks a question, and the Assistant "
    "solves it. The assistant first thinks about the reasoning process in the mind and then "
    "provides the user with the answer. The reasoning process and answer are enclosed within "
    "<think> </think> and <answer> </answer> tags, respectively."
)
R1V_SUFFIX = "Output the thinking process in <think> </think> and final answer (number) in <answer> </answer> tags."

# Short, varied reasoning for r1v demonstrations: one fixed sentence would teach the model a
# constant string rather than the format.
_R1V_REASONING = (
    "I count the objects in the image one by one.",
    "Let me look at each object in the scene and count them.",
    "I go over the image from left to right and count every object.",
    "Counting all the objects I can see in the image.",
    "I check each shape in the picture and keep a running count.",
    "I scan the scene and count the objects, including partly hidden ones.",
)


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

    def messages(self, question: str) -> list[dict]:
        """Chat messages for one image and one question (the image comes first, as in Qwen2-VL's examples)."""
        user = {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": self.user_template.format(question=question)}]}
        return ([{"role": "system", "content": self.system}] if self.system else []) + [user]

    def demonstration(self, answer: int, rng: random.Random) -> str:
        """The ground-truth answer written the way this style asks for."""
        if self.demonstration_template is None:
            raise ValueError(f"prompt style {self.name!r} has no demonstration template")
        return self.demonstration_template.format(answer=answer, reasoning=rng.choice(_R1V_REASONING))

    def format_ok(self, completion: str) -> bool:
        return re.fullmatch(self.format_pattern, completion.strip(), flags=re.DOTALL) is not None


DEFAULT = PromptStyle("default", None, "{question}", "{answer}", r"\d+")
R1V = PromptStyle(
    "r1v",
    R1V_SYSTEM,
    "{question} " + R1V_SUFFIX,
    "<think>{reasoning}</think><answer>{answer}</answer>",
    r"<think>.*?</think>\s*<answer>\s*\d+\s*</answer>",
)


def get_style(cfg: PromptConfig | str) -> PromptStyle:
    if isinstance(cfg, str):
        cfg = PromptConfig(style=cfg)
    if cfg.style == "default":
        return DEFAULT
    if cfg.style == "r1v":
        return R1V
    if cfg.style == "custom":
        if not cfg.template or "{question}" not in cfg.template:
            raise ValueError("prompt.style=custom needs prompt.template containing {question}")
        demo = cfg.demonstration
        pattern = re.escape(demo).replace(re.escape("{answer}"), r"\s*\d+\s*") if demo else r".*\d+.*"
        return PromptStyle("custom", cfg.system, cfg.template, demo, pattern)
    raise ValueError(f"unknown prompt style {cfg.style!r}; choose default, r1v or custom")
