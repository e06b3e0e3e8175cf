"""Running a tool call with bounded time, memory and output; whatever goes wrong is an error turn.

The project's own tools (`Tool.trusted`: pure functions of the images) run in this process. Any
other tool runs in a forked child with an address-space limit (`memory_mb`) and is killed at
`timeout_s`: a user's tool that loops, allocates without bound or crashes costs one error turn
and a counted metric, never the step. Outputs are checked too: text at most MAX_TEXT characters,
at most MAX_IMAGES images of at most MAX_OUTPUT_PIXELS each.
"""

from __future__ import annotations

import multiprocessing
import resource
from dataclasses import dataclass

from . import Tool, ToolError, ToolOutput
from .crop import MAX_OUTPUT_PIXELS

MAX_TEXT = 2000
MAX_IMAGES = 4


@dataclass(frozen=True)
class ToolResult:
    """What the policy reads back: the output, or the error message (then `output` is None)."""

    output: ToolOutput | None
    error: str | None = None
    raised: bool = False
    """The tool itself failed (raised something other than ToolError, timed out, ran out of memory):
    counted apart from calls that were merely wrong."""

    @property
    def ok(self) -> bool:
        return self.error is None


def run_tool(tool: Tool, images, arguments: dict, timeout_s: float = 10.0, memory_mb: int = 2048) -> ToolResult:
    """The tool's answer to `arguments` on the sample's `images`, or an error turn."""
    try:
        if tool.trusted:
            output = tool.function(list(images), **arguments)
        else:
            output = _isolated(tool, list(images), arguments, timeout_s, memory_mb)
    except ToolError as exc:
        return ToolResult(None, str(exc))
    except _Failed as exc:
        return ToolResult(None, str(exc), raised=True)
    except Exception as exc:  # a trusted tool's bug is still the policy's error turn, never a lost step
        return ToolResult(None, f"{tool.name} failed: {type(exc).__name__}: {exc}", raised=True)
    problem = _output_problem(tool, output)
    return ToolResult(None, problem, raised=True) if problem else ToolResult(output)


class _Failed(Exception):
    """The isolated tool timed out, died or raised: the message says which."""


def _output_problem(tool: Tool, output) -> str | None:
    if not isinstance(output, ToolOutput):
        return f"{tool.name} returned {type(output).__name__}, not a ToolOutput"
    if not isinstance(output.text, str) or len(output.text) > MAX_TEXT:
        return f"{tool.name} returned text that is not a string of at most {MAX_TEXT} characters"
    if len(output.images) > MAX_IMAGES:
        return f"{tool.name} returned {len(output.images)} images; at most {MAX_IMAGES}"
    for image in output.images:
        if not hasattr(image, "size") or image.size[0] * image.size[1] > MAX_OUTPUT_PIXELS:
            return f"{tool.name} returned an image that is not a PIL image of at most {MAX_OUTPUT_PIXELS} pixels"
    return None


def _child(tool: Tool, images, arguments: dict, memory_mb: int, sender) -> None:
    limit = memory_mb * 2**20
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    try:
        sender.send(("ok", tool.function(images, **arguments)))
    except ToolError as exc:
        sender.send(("tool_error", str(exc)))
    except BaseException as exc:  # MemoryError included: the child reports it and ends
        sender.send(("raised", f"{tool.name} failed: {type(exc).__name__}: {exc}"))


def _isolated(tool: Tool, images, arguments: dict, timeout_s: float, memory_mb: int) -> ToolOutput:
    context = multiprocessing.get_context("fork")  # the tool and the images reach the child as they are
    receiver, sender = context.Pipe(duplex=False)
    process = context.Process(target=_child, args=(tool, images, arguments, memory_mb, sender), daemon=True)
    process.start()
    sender.close()
    try:
        if not receiver.poll(timeout_s):
            raise _Failed(f"{tool.name} took longer than {timeout_s:g} s and was stopped")
        kind, value = receiver.recv()
    except EOFError:
        raise _Failed(f"{tool.name} ended without an answer (exit code {process.exitcode})") from None
    finally:
        if process.is_alive():
            process.kill()
        process.join(timeout=5)
        receiver.close()
    if kind == "tool_error":
        raise ToolError(value)
    if kind == "raised":
        raise _Failed(value)
    return value
