"""Running a tool call with bounded time, memory and output; whatever goes wrong is an error turn.

The project's own tools (`Tool.trusted`: pure functions of the images) run in this process. Any
other tool runs in a forked child that may grow by `memory_mb` beyond the address space it was
forked with and is killed at `timeout_s`: a user's tool that loops, allocates without bound or
crashes costs one error turn and a counted metric, never the step. Outputs are checked too: at
most MAX_RESULT_BYTES pickled, text at most MAX_TEXT characters, at most MAX_IMAGES PIL images of
at most MAX_OUTPUT_PIXELS each. The child bounds mistakes, not malice: it has the trainer's
files and network, and its answer is unpickled here, so run only tools you would import.
"""

from __future__ import annotations

import multiprocessing
import pickle
import resource
import signal
from dataclasses import dataclass

from PIL import Image

from . import Tool, ToolError, ToolOutput
from .crop import MAX_OUTPUT_PIXELS

MAX_TEXT = 2000
MAX_IMAGES = 4
MAX_RESULT_BYTES = 64 * 2**20  # four images at the pixel cap, with room to spare


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
        if not isinstance(image, Image.Image) or image.width * image.height > MAX_OUTPUT_PIXELS:
            return f"{tool.name} returned an image that is not a PIL image of at most {MAX_OUTPUT_PIXELS} pixels"
    return None


def _address_space() -> int:
    """Bytes of address space this process has mapped (a forked child starts with its parent's)."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmSize:"):
                return int(line.split()[1]) * 1024
    return 0


def _child(tool: Tool, images, arguments: dict, memory_mb: int, sender) -> None:
    for sig in (signal.SIGINT, signal.SIGTERM):  # not the trainer's save-and-stop handler
        signal.signal(sig, signal.SIG_DFL)
    try:
        _, hard = resource.getrlimit(resource.RLIMIT_AS)
        soft = _address_space() + memory_mb * 2**20
        resource.setrlimit(resource.RLIMIT_AS, (soft if hard == resource.RLIM_INFINITY else min(soft, hard), hard))
        answer = ("ok", tool.function(images, **arguments))
    except ToolError as exc:
        answer = ("tool_error", str(exc))
    except BaseException as exc:  # MemoryError included: the child reports it and ends
        answer = ("raised", f"{tool.name} failed: {type(exc).__name__}: {exc}")
    try:
        sender.send_bytes(pickle.dumps(answer))
    except Exception as exc:  # an answer that does not pickle
        sender.send_bytes(pickle.dumps(("raised", f"{tool.name}'s answer cannot be sent: {exc}")))


def _isolated(tool: Tool, images, arguments: dict, timeout_s: float, memory_mb: int) -> ToolOutput:
    context = multiprocessing.get_context("fork")  # the tool and the images reach the child as they are
    receiver, sender = context.Pipe(duplex=False)
    process = context.Process(target=_child, args=(tool, images, arguments, memory_mb, sender))
    process.start()
    sender.close()
    try:
        if not receiver.poll(timeout_s):
            raise _Failed(f"{tool.name} took longer than {timeout_s:g} s and was stopped")
        kind, value = pickle.loads(receiver.recv_bytes(maxlength=MAX_RESULT_BYTES))
    except EOFError:
        process.join(timeout=5)
        raise _Failed(f"{tool.name} ended without an answer (exit code {process.exitcode})") from None
    except OSError:  # recv_bytes: longer than maxlength
        raise _Failed(f"{tool.name} answered with more than {MAX_RESULT_BYTES} bytes") from None
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
