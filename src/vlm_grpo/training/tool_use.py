"""Tool use in a run (the `tools` section, `ToolsConfig`): the engine wrapped for multi-turn
rollouts, the prompt that names the tools, the optional reward terms and the tool metrics.

The task's reward reads the final turn; the tool terms are added to it and reported apart, so a run
can see how much of its reward is for calling. Metrics are of the policy's own rows (injected rows
are left out, as for every sampled metric).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import torch

from ..config import TrainConfig
from ..config_checks import sharded
from ..config_sections import register_section
from ..rollout import Engine, Rollout
from ..rollout.batch import RowTurns
from ..rollout.turns import ToolEngine
from ..tasks import Score
from ..tasks.styles import PromptStyle
from ..tools import get_tools


@dataclass
class ToolsConfig:
    """The `tools` section: tools the policy may call mid-answer (multi-turn rollouts, `rollout/turns.py`),
    their limits, and optional reward terms, each added to the task's reward and reported apart
    (`reward/tool_*`)."""

    names: list[str] = field(default_factory=list)
    """Tools the policy may call (`crop`, `zoom`, a plug-in's, or `package.module:function`); empty: one
    turn, no tools. Their signatures are appended to every prompt."""
    max_turns: int = 2
    """Most assistant turns per rollout with tools (at least 2: one that calls, one that answers);
    max_completion_length bounds all of them together, tool turns included."""
    timeout_s: float = 10.0
    """Seconds a call may run (a user's tool, in its child process)."""
    memory_mb: int = 2048
    """Memory a user's tool may add to its child process."""
    call_reward: float = 0.0
    """Added to a rollout that wrote at least one tool call, well-formed or not."""
    valid_call_reward: float = 0.0
    """Added to a rollout with at least one call that ran."""
    turn_penalty: float = 0.0
    """Subtracted per assistant turn after the first."""

    def check(self, cfg: TrainConfig, need) -> None:
        if not self.names:
            return
        need(self.max_turns >= 2, "tools need tools.max_turns of at least 2: a turn that calls and one that answers")
        need(
            not cfg.overlap_rollout,
            "tools and overlap_rollout do not combine yet: each tool turn waits for the turn before it",
        )
        need(not cfg.dynamic_sampling.enabled, "tools and dynamic_sampling do not combine yet")
        need(not sharded(cfg), "tools and sharded training (fsdp, zero_stage) do not combine yet")
        need(self.timeout_s > 0, f"tools.timeout_s must be positive, got {self.timeout_s}")
        need(self.memory_mb >= 64, f"tools.memory_mb must be at least 64, got {self.memory_mb}")
        need(self.turn_penalty >= 0, f"tools.turn_penalty must be >= 0, got {self.turn_penalty}")


register_section("tools", ToolsConfig)


def with_tools(cfg: TrainConfig, engine: Engine, style: PromptStyle, turn_end_id: int) -> tuple[Engine, PromptStyle]:
    """The engine and prompt style of a run with tools (unchanged without them)."""
    settings: ToolsConfig = cfg.tools
    if not settings.names:
        return engine, style
    tools = get_tools(settings.names)
    wrapped = ToolEngine(engine, tools, settings.max_turns, turn_end_id, settings.timeout_s, settings.memory_mb)
    return wrapped, style.with_tools(tools)


def tool_terms(turns: RowTurns | None, cfg: ToolsConfig) -> dict[str, float]:
    """One rollout's tool reward terms, by name."""
    if turns is None:
        return {"tool_call": 0.0, "valid_call": 0.0, "turn_penalty": 0.0}
    return {
        "tool_call": cfg.call_reward * (turns.calls > 0),
        "valid_call": cfg.valid_call_reward * (turns.valid_calls > 0),
        "turn_penalty": -cfg.turn_penalty * (turns.turns - 1),
    }


def add_tool_rewards(scores: list[Score], turns: list[RowTurns | None] | None, cfg: ToolsConfig) -> list[Score]:
    """Each score with its rollout's tool terms added to the reward."""
    if turns is None:
        return scores
    return [replace(s, reward=s.reward + sum(tool_terms(t, cfg).values())) for s, t in zip(scores, turns)]


def tool_metrics(rollout: Rollout, cfg: ToolsConfig) -> dict[str, float]:
    """Calls, valid calls, turns, failures and accuracy with and without a call, of sampled rows."""
    if rollout.turns is None:
        return {}
    own = [i for i in range(len(rollout.texts)) if not bool(rollout.injected[i])]
    rows = [(rollout.turns[i] or RowTurns(), rollout.scores[i]) for i in own]
    if not rows:
        return {}
    calls = sum(t.calls for t, _ in rows)
    called = [s.correct for t, s in rows if t.calls]
    uncalled = [s.correct for t, s in rows if not t.calls]
    terms = [tool_terms(t, cfg) for t, _ in rows]
    return {
        "tools/calls_per_rollout": calls / len(rows),
        "tools/call_rate": len(called) / len(rows),
        "tools/valid_call_rate": sum(t.valid_calls for t, _ in rows) / calls if calls else math.nan,
        "tools/failures": float(sum(t.failures for t, _ in rows)),
        "tools/turns": sum(t.turns for t, _ in rows) / len(rows),
        "tools/tool_tokens": float(rollout.tool_tokens[torch.tensor(own)].sum()) / len(rows),
        "rollout/accuracy_with_call": sum(called) / len(called) if called else math.nan,
        "rollout/accuracy_without_call": sum(uncalled) / len(uncalled) if uncalled else math.nan,
        **{f"reward/{name}": sum(t[name] for t in terms) / len(terms) for name in terms[0]},
    }
