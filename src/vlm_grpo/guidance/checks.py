"""Checks a run makes before training on demonstrations it writes (injection, SFT terms, prefixes).

A demonstration that loses reward would train a wrong answer silently; one longer than a sampled
completion may be is one the policy could never write whole, and with tools a conversation cut
after its call has answered nothing. Both are refused (or, for a one-turn demonstration that is
only too long, warned about) before the first step, not found in a learning curve hours later.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from ..tasks.rewards import REWARDS, Scorer
from ..tasks.styles import PromptStyle
from .remedy import RemedyKit, demonstration_tokens


def check_demonstrations(style: PromptStyle, scorer: Scorer, targets: list[Any]) -> None:
    """Refuse to start when a demonstration would not earn the top reward: every built-in reward
    must give it 1 and the task must read it as correct (a `default`-style bare answer scores -1
    under `answer_strict`; a custom demonstration whose last number is not the answer scores 0)."""
    rng = random.Random(0)  # its own generator: checking draws nothing from the injector's
    for target in targets:
        demo = style.demonstration(target, rng)
        for name, fn in zip(scorer.names, scorer.fns):
            value = float(fn(demo, target, style))
            if name in REWARDS and value < 1.0:
                raise ValueError(
                    f"prompt style {style.name!r} writes the demonstration {demo!r}, which scores {value:g} "
                    f"under reward {name!r} (top 1): injected rows would train a wrong answer; change "
                    "reward_funcs, prompt.style or prompt.demonstration"
                )
        if not scorer(demo, target).correct:
            raise ValueError(
                f"prompt style {style.name!r} writes the demonstration {demo!r}, which the task does not "
                "read as the correct answer: change prompt.demonstration"
            )


def every_demonstration(style: PromptStyle, target: Any) -> list[str]:
    """Every text the style may write for `target`: a demonstration draws one reasoning sentence,
    so there is one text per sentence (one in all where the template has none)."""
    sentences = style.reasoning or ("",)
    texts = [replace(style, reasoning=(sentence,)).demonstration(target, random.Random(0)) for sentence in sentences]
    return list(dict.fromkeys(texts))


def longest_demonstration(kit: RemedyKit, sample) -> tuple[int, int]:
    """Tokens of the longest demonstration the run may write for `sample`, and how many of them are
    the tools' turns (0: a demonstration that calls nothing)."""
    texts = every_demonstration(kit.style, sample.answer)
    text = max(texts, key=lambda t: len(kit.tokenizer(t, add_special_tokens=False)["input_ids"]))
    tokens, turns = demonstration_tokens(kit.tokenizer, kit.end_id, kit.tool_demonstration, sample, text)
    return len(tokens), sum(turns.tool_tokens) if turns is not None else 0


def check_written_demonstrations(
    kit: RemedyKit, samples: list, max_completion_length: int, log: Callable[[str], None]
) -> None:
    """Before training on demonstrations of `samples`: each earns the top reward, and each fits a
    sampled completion. One that calls a tool and does not fit is refused (a conversation cut after
    its call answers nothing); a one-turn one that does not fit is a warning (it still trains its
    first tokens)."""
    check_demonstrations(kit.style, kit.scorer, [sample.answer for sample in samples])
    over = []
    for sample in samples:
        length, tool = longest_demonstration(kit, sample)
        if length > max_completion_length:
            over.append((tool > 0, length, tool, sample.id))
    if not over:
        return
    calls, length, tool, sample_id = max(over)  # a calling one first, then the longest
    held = f" ({tool} of them the tools' turns)" if tool else ""
    message = (
        f"{sample_id}: its demonstration can be {length} tokens{held}, over max_completion_length="
        f"{max_completion_length}; sampled rollouts are cut there, so the policy could never write one "
        f"whole: raise max_completion_length to at least {length}"
    )
    if calls:
        raise ValueError(message)
    log(f"warning: {message}")
