"""Tool use in a run (`tools`, `max_turns`, `tool_use`): the engine wrapped for multi-turn
rollouts, the prompt that names the tools, the optional reward terms and the tool metrics.

The task's reward reads the final turn; the tool terms are added to it and reported apart, so a run
can see how much of its reward is for calling. Metrics are of the policy's own rows (injected rows
are left out, as for every sampled metric).
"""

from __future__ import annotations

import math
from dataclasses import replace

import torch

from ..config import ToolUseConfig, TrainConfig
from ..rollout import Engine, Rollout
from ..rollout.batch import RowTurns
from ..rollout.turns import ToolEngine
from ..tasks import Score
from ..tasks.styles import PromptStyle
from ..tools import get_tools


def with_tools(cfg: TrainConfig, engine: Engine, style: PromptStyle, turn_end_id: int) -> tuple[Engine, PromptStyle]:
    """The engine and prompt style of a run with tools (unchanged without them)."""
    if not cfg.tools:
        return engine, style
    tools = get_tools(cfg.tools)
    wrapped = ToolEngine(engine, tools, cfg.max_turns, turn_end_id, cfg.tool_use.timeout_s, cfg.tool_use.memory_mb)
    return wrapped, style.with_tools(tools)


def tool_terms(turns: RowTurns | None, cfg: ToolUseConfig) -> dict[str, float]:
    """One rollout's tool reward terms, by name."""
    if turns is None:
        return {"tool_call": 0.0, "valid_call": 0.0, "turn_penalty": 0.0}
    return {
        "tool_call": cfg.call_reward * (turns.calls > 0),
        "valid_call": cfg.valid_call_reward * (turns.valid_calls > 0),
        "turn_penalty": -cfg.turn_penalty * (turns.turns - 1),
    }


def add_tool_rewards(scores: list[Score], turns: list[RowTurns | None] | None, cfg: ToolUseConfig) -> list[Score]:
    """Each score with its rollout's tool terms added to the reward."""
    if turns is None:
        return scores
    return [replace(s, reward=s.reward + sum(tool_terms(t, cfg).values())) for s, t in zip(scores, turns)]


def tool_metrics(rollout: Rollout, cfg: ToolUseConfig) -> dict[str, float]:
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
