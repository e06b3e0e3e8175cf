#!/usr/bin/env python
"""Write docs/configuration.md from the configuration's own field docstrings.

python scripts/config_reference.py            # rewrite docs/configuration.md
python scripts/config_reference.py --check    # exit 1 when the file is stale (the tests run this)
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import inspect
import sys
import typing
from pathlib import Path

from vlm_grpo import config
from vlm_grpo.config_sections import Schedule, sections

OUT = Path(__file__).resolve().parents[1] / "docs" / "configuration.md"
HEADER = """# Configuration reference

Generated from the field docstrings of `src/vlm_grpo/config.py`, `config_sections.py` and the modules that
declare their own sections, by `python scripts/config_reference.py` (a test fails when this file is
stale). A preset YAML holds only what differs from these defaults; on the command line every key is
`key=value`, nested ones with dots (`injection.mode=random`, `injection.rate.schedule=linear_decay`).

The rule: a key TRL's `GRPOConfig` has keeps TRL's flat name and meaning; a feature TRL lacks is one
section named after it, declared by the module that implements it (a remedy's, an engine's, a tool's);
TRL's keys of a feature that is a section here (vLLM's, tool calling's) are mapped into it by the Python
API (docs/python-api.md). A quantity that moves over training is a `Schedule` wherever it appears; a
number written in its place is a constant. A key that moved stops with a message naming its new place.
"""


def field_docs(cls: type) -> dict[str, str]:
    """Each field's docstring: the string literal right after its annotated assignment."""
    tree = ast.parse(inspect.getsource(cls))
    body = tree.body[0].body
    docs = {}
    for node, after in zip(body, body[1:]):
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            value = after.value if isinstance(after, ast.Expr) else None
            if isinstance(value, ast.Constant) and isinstance(value.value, str):
                docs[node.target.id] = " ".join(value.value.split())
    return docs


def default_of(field: dataclasses.Field) -> object:
    if field.default is not dataclasses.MISSING:
        return field.default
    if field.default_factory is not dataclasses.MISSING:
        return field.default_factory()
    return None


def section(cls: type, prefix: str, title: str, intro: str = "") -> list[str]:
    """The table of `cls`'s own fields, then one of each dataclass it inherits fields from (the same keys,
    flat), then one per nested section."""
    hints = typing.get_type_hints(cls)
    docs = field_docs(cls)
    own = cls.__dict__.get("__annotations__", {})
    bases = [base for base in cls.__bases__ if dataclasses.is_dataclass(base)]
    head = [f"## {title}", ""] + ([intro, ""] if intro else [])
    lines, nested = head + ["| key | type | default | meaning |", "|---|---|---|---|"], []
    for field in dataclasses.fields(cls):
        if field.name not in own or field.name == "sections":
            continue
        kind = hints[field.name]
        if dataclasses.is_dataclass(kind) and kind is not Schedule:
            nested.append((kind, f"{prefix}{field.name}.", f"`{prefix}{field.name}.*`: {docs.get(field.name, '')}"))
            continue
        shown = (getattr(kind, "__name__", None) or str(kind).replace("typing.", "")).replace("|", "\\|")
        default = default_of(field)
        if isinstance(default, Schedule):
            default = ", ".join(f"{f.name}={getattr(default, f.name)}" for f in dataclasses.fields(Schedule)[:4])
        cell = "" if default is None else f"`{default}`"
        meaning = docs.get(field.name, "").replace("|", "\\|")
        lines.append(f"| `{prefix}{field.name}` | {shown} | {cell} | {meaning} |")
    out = lines + [""]
    for base in bases:
        out += section(base, prefix, f"{title}, inherited from `{base.__name__}` (flat keys)")
    for kind, sub_prefix, sub_title in nested:
        out += section(kind, sub_prefix, sub_title)
    return out


def render() -> str:
    lines = section(config.TrainConfig, "", "Run")
    for name, cls in sections().items():
        where = f"declared in `{cls.__module__}` (`{cls.__name__}`)"
        lines += section(
            cls, f"{name}.", f"`{name}.*`", " ".join((inspect.getdoc(cls) or "").split()) + f" Its section is {where}."
        )
    lines += section(Schedule, "", "Schedule (`injection.rate`, `sft.coef`, `injection.prefix_ratio`, ...)")
    return HEADER + "\n" + "\n".join(lines).rstrip() + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 when docs/configuration.md is stale")
    text = render()
    if parser.parse_args().check:
        if not OUT.is_file() or OUT.read_text() != text:
            print(f"{OUT} is stale: run python scripts/config_reference.py", file=sys.stderr)
            return 1
        return 0
    OUT.write_text(text)
    print(f"wrote {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
