"""Image tools a policy may call mid-answer ("thinking with images"): each one registered module.

A tool is a name, a description, an argument schema and a pure function of the sample's images and
the call's arguments, returning a `ToolOutput` (text and/or new images) or raising `ToolError`,
whose message is what the policy reads back. `calls.py` reads a call out of a completion strictly;
`runner.py` runs it with bounded time and output (a tool that is not the project's own runs in a
child process with a memory limit). A user's tool is registered with `register_tool` (from a
plug-in) or named `package.module:function` (the function returns a `Tool`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from ..registry import Registry, import_object

SCALARS = ("number", "integer", "string", "boolean")


class ToolError(ValueError):
    """A call the tool cannot answer (a bad box, an image that is not there): its message is the
    error turn the policy reads; it is never a crash."""


@dataclass(frozen=True)
class Arg:
    """One argument of a tool: its JSON type and, for arrays, their length and element type."""

    kind: str
    """number | integer | string | boolean | array"""
    required: bool = True
    length: int | None = None
    """array: the exact number of elements."""
    items: str = "number"
    """array: the JSON type of every element."""
    choices: tuple[str, ...] = ()
    """string: the values it may take (empty: any)."""
    doc: str = ""

    def __post_init__(self):
        if self.kind not in (*SCALARS, "array") or self.items not in SCALARS:
            raise ValueError(f"an argument's kind is one of {', '.join((*SCALARS, 'array'))} (got {self.kind!r})")


@dataclass(frozen=True)
class ToolOutput:
    """What a tool gives back: text for the policy to read and any new images (PIL) it should see."""

    text: str = ""
    images: tuple = ()


@dataclass(frozen=True)
class Tool:
    name: str
    description: str
    args: dict[str, Arg]
    function: Callable[..., ToolOutput]
    """function(images, **arguments) -> ToolOutput; images: the sample's PIL images, in order."""
    trusted: bool = False
    """The project's own pure tools run in the trainer's process; any other runs isolated."""
    defaults: dict = field(default_factory=dict)
    """Arguments the call may leave out, filled in before the function runs."""

    def __post_init__(self):
        unknown = sorted(set(self.defaults) - set(self.args))
        if unknown:
            raise ValueError(f"tool {self.name!r}: a default for {unknown[0]!r}, which is not one of its arguments")

    def signature(self) -> str:
        """The tool as a prompt describes it: name(arg: type, ...) - description."""
        params = ", ".join(f"{name}: {arg.kind}{'' if arg.required else '?'}" for name, arg in self.args.items())
        return f"{self.name}({params}) - {self.description}"


TOOLS: Registry[Tool] = Registry("tool")


def register_tool(tool: Tool, replace: bool = False) -> None:
    TOOLS.register(tool.name, tool, replace)


def get_tool(name: str) -> Tool:
    """A registered tool, or `package.module:function` returning one."""
    if ":" in name and name not in TOOLS:
        tool = import_object(name, "tool")()
        if not isinstance(tool, Tool):
            raise ValueError(f"tool {name!r} must return a vlm_grpo.tools.Tool, not {type(tool).__name__}")
        return tool
    return TOOLS.get(name)


def get_tools(names: Sequence[str]) -> dict[str, Tool]:
    """The named tools by their own names; a name given twice is one tool."""
    tools = [get_tool(name) for name in dict.fromkeys(names)]
    return {tool.name: tool for tool in tools}


from . import crop as _crop  # noqa: E402  (the built-in tools register themselves)

del _crop
