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

OUT = Path(__file__).resolve().parents[1] / "docs" / "configuration.md"
HEADER = """# Configuration reference

Generated from the field docstrings of `src/vlm_grpo/config.py` and `config_sections.py` by
`python scripts/config_reference.py` (a test fails when this file is stale). A preset YAML holds only what
differs from these defaults; on the command line every key is `key=value`, nested ones with dots
(`injection.mode=random`).
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


def section(cls: type, prefix: str, title: str) -> list[str]:
    """The table of `cls`'s own fields, then one of each dataclass it inherits fields from (the same keys,
    flat), then one per nested section."""
    hints = typing.get_type_hints(cls)
    docs = field_docs(cls)
    own = cls.__dict__.get("__annotations__", {})
    bases = [base for base in cls.__bases__ if dataclasses.is_dataclass(base)]
    lines, nested = [f"## {title}", "", "| key | type | default | meaning |", "|---|---|---|---|"], []
    for field in dataclasses.fields(cls):
        if field.name not in own:
            continue
        kind = hints[field.name]
        if dataclasses.is_dataclass(kind):
            nested.append((kind, f"{prefix}{field.name}.", f"`{prefix}{field.name}.*`: {docs.get(field.name, '')}"))
            continue
        shown = (getattr(kind, "__name__", None) or str(kind).replace("typing.", "")).replace("|", "\\|")
        default = default_of(field)
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
    return HEADER + "\n" + "\n".join(section(config.TrainConfig, "", "Run")).rstrip() + "\n"


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
