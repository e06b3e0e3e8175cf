"""A tool call read out of a completion, strictly: `<tool_call>{"name": ..., "arguments": {...}}</tool_call>`.

The format is Qwen's own tool-call block (a JSON object between the tags). Reading is strict
because a lenient reader teaches the policy a lenient format: exactly one block, nothing but
whitespace around the JSON inside it, a JSON object with exactly the keys `name` and `arguments`,
no duplicate keys, no NaN or infinities, and arguments that match the tool's schema (no unknown
ones, every required one, the declared types; a JSON boolean is not a number). A malformed call is
a `CallError` whose message the policy reads back as an error turn.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass

from . import Arg, Tool

OPEN, CLOSE = "<tool_call>", "</tool_call>"
MAX_CALL_CHARS = 2000  # a call longer than this is not a call but a runaway completion
MAX_INT_DIGITS = 18  # longer integers are no pixel coordinate, and overflow a float
JSON_SPACE = " \t\n\r"
_TAG = re.compile(r"</?tool_call>")


class CallError(ValueError):
    """A call that cannot be run as written; the message says why, in words the policy can act on."""


@dataclass(frozen=True)
class ToolCall:
    name: str
    arguments: dict
    end: int
    """Characters of the completion up to and including the closing tag: the turn ends there."""


def write_call(call: Mapping) -> str:
    """A call as a policy writes it: `{"name": ..., "arguments": {...}}` as JSON between the tags."""
    return f"{OPEN}{json.dumps(dict(call))}{CLOSE}"


def has_call(text: str) -> bool:
    """The completion opens a tool-call block (well-formed or not)."""
    return OPEN in text


def outside_calls(text: str) -> str:
    """The turn without its tool-call blocks (an unclosed one runs to the end): what the turn answers.
    A call's box is no answer: a conversation whose last turn only calls has answered nothing."""
    kept, start = [], 0
    while (found := text.find(OPEN, start)) >= 0:
        kept.append(text[start:found])
        close = text.find(CLOSE, found + len(OPEN))
        if close < 0:
            return "".join(kept)
        start = close + len(CLOSE)
    return "".join(kept) + text[start:]


def parse_call(text: str, tools: Mapping[str, Tool]) -> ToolCall:
    """The one tool call in `text`, checked against `tools`; CallError if there is none or it is bad."""
    start = text.find(OPEN)
    if start < 0:
        raise CallError(f'no tool call: write {OPEN}{{"name": ..., "arguments": {{...}}}}{CLOSE}')
    close = text.find(CLOSE, start)
    if close < 0:
        raise CallError(f"the tool call is not closed with {CLOSE}")
    body = text[start + len(OPEN) : close]
    if len(body) > MAX_CALL_CHARS:
        raise CallError(f"the tool call is {len(body)} characters long; at most {MAX_CALL_CHARS}")
    if _TAG.search(body):
        raise CallError("a tool call cannot contain another tool-call tag")
    if OPEN in text[close:] or CLOSE in text[:start] or CLOSE in text[close + len(CLOSE) :]:
        raise CallError("one tool call per turn, in one pair of tags")
    payload = _json_object(body)
    if set(payload) != {"name", "arguments"}:
        raise CallError(f"a tool call has exactly the keys 'name' and 'arguments' (got {sorted(payload)})")
    name, arguments = payload["name"], payload["arguments"]
    if not isinstance(name, str) or name not in tools:
        raise CallError(f"unknown tool {name!r}; the tools are {', '.join(sorted(tools))}")
    if not isinstance(arguments, dict):
        raise CallError("'arguments' must be a JSON object")
    tool = tools[name]
    return ToolCall(name, {**tool.defaults, **check_arguments(tool, arguments)}, close + len(CLOSE))


def _json_object(body: str) -> dict:
    def no_duplicates(pairs):
        keys = [k for k, _ in pairs]
        if len(keys) != len(set(keys)):
            raise CallError(f"duplicate key in the tool call: {sorted(k for k in keys if keys.count(k) > 1)[0]!r}")
        return dict(pairs)

    def no_constant(word):
        raise CallError(f"{word} is not a number a tool accepts")

    def bounded_int(digits: str) -> int:
        if len(digits) > MAX_INT_DIGITS:
            raise CallError(f"an integer of {len(digits)} digits is not a number a tool accepts")
        return int(digits)

    try:
        # JSON's own whitespace only: str.strip() would also pass Unicode spaces JSON does not allow.
        payload = json.loads(
            body.strip(JSON_SPACE), object_pairs_hook=no_duplicates, parse_constant=no_constant, parse_int=bounded_int
        )
    except json.JSONDecodeError as exc:
        raise CallError(f"the tool call is not valid JSON ({exc.msg} at character {exc.pos})") from None
    except RecursionError:
        raise CallError("the tool call is nested too deeply") from None
    if not isinstance(payload, dict):
        raise CallError("the tool call must be a JSON object")
    return payload


def check_arguments(tool: Tool, arguments: dict) -> dict:
    """The arguments, each checked against the tool's schema."""
    unknown = sorted(set(arguments) - set(tool.args))
    if unknown:
        raise CallError(f"{tool.name} takes no argument {unknown[0]!r}; it takes {', '.join(tool.args)}")
    missing = [name for name, arg in tool.args.items() if arg.required and name not in arguments]
    if missing:
        raise CallError(f"{tool.name} needs the argument {missing[0]!r}")
    for name, value in arguments.items():
        _check_value(f"{tool.name}: {name!r}", tool.args[name], value)
    return dict(arguments)


def _check_value(where: str, arg: Arg, value) -> None:
    if arg.kind == "array":
        if not isinstance(value, list):
            raise CallError(f"{where} must be a list")
        if arg.length is not None and len(value) != arg.length:
            raise CallError(f"{where} must have {arg.length} elements (got {len(value)})")
        for item in value:
            _check_scalar(where, arg.items, item)
        return
    _check_scalar(where, arg.kind, value)
    if arg.choices and value not in arg.choices:
        raise CallError(f"{where} must be one of {', '.join(arg.choices)}")


def _check_scalar(where: str, kind: str, value) -> None:
    ok = {
        "number": isinstance(value, (int, float)) and not isinstance(value, bool),
        "integer": isinstance(value, int) and not isinstance(value, bool),
        "string": isinstance(value, str),
        "boolean": isinstance(value, bool),
    }[kind]
    if not ok:
        raise CallError(f"{where} must be {'an' if kind == 'integer' else 'a'} {kind} (got {json.dumps(value)[:40]})")
    if kind == "number" and not math.isfinite(value):  # 1e999 parses as inf
        raise CallError(f"{where} must be a finite number")


def instructions(tools: Mapping[str, Tool]) -> str:
    """What a prompt says about the tools: their signatures and how to call one."""
    listed = "; ".join(tool.signature() for tool in tools.values())
    return (
        f"You may call a tool before you answer: {listed}. To call one, write "
        f'{OPEN}{{"name": ..., "arguments": {{...}}}}{CLOSE} and end your turn; '
        "its output comes back in <tool_response> </tool_response>."
    )
