"""ARCHITECTURE.md's "Where an addition goes", checked against the code: every file and folder it names
exists, every `register_*` it names is a function of the package, every registry or type it names is
defined, and every config key it names is a key of the run configuration."""

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "src" / "vlm_grpo"
TEXT = ROOT.joinpath("ARCHITECTURE.md").read_text()
START = TEXT.index("## Where an addition goes")
SECTION = TEXT[START : TEXT.index("\n## ", START + 3)]
NAMES = sorted(set(re.findall(r"`([^`]+)`", SECTION)))


def _defined() -> set[str]:
    """Every class, function and module-level name assigned anywhere in the package."""
    names = set()
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.ClassDef, ast.FunctionDef)):
                names.add(node.name)
            elif isinstance(node, (ast.Assign, ast.AnnAssign)):
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                names.update(t.id for t in targets if isinstance(t, ast.Name))
    return names


DEFINED = _defined()


@pytest.mark.parametrize("name", [n for n in NAMES if n.endswith((".py", "/")) or n.startswith(("docs/", "tests/"))])
def test_every_named_file_or_folder_exists(name):
    places = [ROOT / name, PACKAGE / name]
    assert any(p.exists() for p in places), f"ARCHITECTURE.md names {name}, which is not in the tree"


@pytest.mark.parametrize("name", [n for n in NAMES if re.search(r"register_\w+", n)])
def test_every_named_register_call_exists(name):
    function = re.search(r"register_\w+", name).group(0)
    assert function in DEFINED, f"ARCHITECTURE.md names {function}, which the package does not define"


@pytest.mark.parametrize("name", [n for n in NAMES if re.fullmatch(r"[A-Z][A-Za-z_]+", n)])
def test_every_named_registry_or_type_is_defined(name):
    assert name in DEFINED, f"ARCHITECTURE.md names {name}, which the package does not define"


def test_the_engine_methods_named_are_the_protocols():
    from vlm_grpo.rollout.engines.base import Engine

    listed = re.search(r"protocol \(`rollout/engines/base.py`: (.*?); a factory", SECTION, re.S).group(1)
    named = set(re.findall(r"`(\w+)`", listed))
    protocol = {name for name in vars(Engine) if not name.startswith("_") and callable(vars(Engine)[name])}
    assert named == protocol


@pytest.mark.parametrize("key", ["task_options", "remedies", "rollout_engine", "scale_rewards", "tools.names"])
def test_every_named_config_key_is_one(key):
    from vlm_grpo.config import TrainConfig

    cfg = TrainConfig()
    for part in key.split("."):
        cfg = getattr(cfg, part)  # AttributeError names a key that is not one
