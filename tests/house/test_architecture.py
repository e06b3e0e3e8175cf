"""The house rules, read from the source: layers import only downwards, the core imports no model,
data or trainer code, only the lab and the CLI import the lab, nothing imports tests or benchmarks,
and modules and functions stay small enough to read in one sitting."""

import ast
from pathlib import Path

import pytest

from support import ROOT

PACKAGE = ROOT / "src" / "vlm_grpo"
# Lowest first; a module may import its own layer and the layers before it.
LAYERS = [
    "base",
    "core",
    "tools",
    "tasks",
    "data",
    "models",
    "rollout",
    "guidance",
    "evaluation",
    "training",
    "builtins",
    "study",
    "api",
    "lab",
    "cli",
]
BASE_MODULES = {"config", "config_checks", "config_sections", "errors", "registry", "seeding", "__init__"}
MAX_MODULE_LINES = 450
MAX_FUNCTION_LINES = 60


def modules() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py"))


def layer_of(path: Path) -> str:
    parts = path.relative_to(PACKAGE).with_suffix("").parts
    if len(parts) == 1:
        return "cli" if parts[0] == "cli" else "base" if parts[0] in BASE_MODULES else parts[0]
    return parts[0]


def imported(path: Path) -> set[str]:
    """Absolute names of the vlm_grpo modules (and tests/benchmarks) that `path` imports."""
    package = ["vlm_grpo", *path.relative_to(PACKAGE).parent.parts]
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            module = ".".join(base + ([node.module] if node.module else []))
            names.add(module)
            names.update(f"{module}.{alias.name}" for alias in node.names)  # `from . import x` imports x
    return {n for n in names if n.split(".")[0] in ("vlm_grpo", "tests", "benchmarks")}


def target_layer(name: str) -> str | None:
    parts = name.split(".")[1:]
    if not parts:
        return None
    if parts[0] in LAYERS:
        return parts[0]
    return "cli" if parts[0] == "cli" else "base" if parts[0] in BASE_MODULES else None


@pytest.mark.parametrize("path", modules(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_imports_go_down_the_layers(path):
    own = LAYERS.index(layer_of(path))
    for name in imported(path):
        assert name.split(".")[0] == "vlm_grpo", f"{path.name} imports {name}: nothing imports tests or benchmarks"
        layer = target_layer(name)
        if layer is not None:
            assert LAYERS.index(layer) <= own, f"{path.relative_to(PACKAGE)} ({LAYERS[own]}) imports {name} ({layer})"


def test_the_core_and_tasks_import_no_model_data_or_trainer_code():
    for path in modules():
        if layer_of(path) in ("core", "tools", "tasks"):
            heavy = {n for n in imported(path) if target_layer(n) in ("data", "models", "rollout", "training")}
            assert not heavy, f"{path.relative_to(PACKAGE)} imports {heavy}"
            source = path.read_text()
            assert "transformers" not in source or layer_of(path) != "core", path


def test_only_the_lab_and_the_cli_import_the_lab():
    for path in modules():
        if layer_of(path) not in ("lab", "cli"):
            assert not {n for n in imported(path) if target_layer(n) == "lab"}, path.relative_to(PACKAGE)


def test_the_cli_only_parses_and_calls():
    tree = ast.parse((PACKAGE / "cli.py").read_text())
    assert not [n for n in tree.body if isinstance(n, ast.ClassDef)], "the CLI defines no classes"
    top_imports = {n.names[0].name for n in tree.body if isinstance(n, ast.Import)}
    top_imports |= {n.module for n in tree.body if isinstance(n, ast.ImportFrom) and n.module}
    assert top_imports <= {"__future__", "pathlib", "typing", "typer"}, (
        "the CLI imports the library only inside commands"
    )


@pytest.mark.parametrize("path", modules(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_modules_and_functions_stay_small(path):
    source = path.read_text()
    assert source.count("\n") <= MAX_MODULE_LINES, f"{path.name}: {source.count(chr(10))} lines"
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            length = body_lines(node)
            assert length <= MAX_FUNCTION_LINES, f"{path.name}:{node.lineno} {node.name} has {length} lines of body"


def body_lines(node: ast.FunctionDef | ast.AsyncFunctionDef) -> int:
    """Lines from the first statement after the docstring to the end: the signature and docstring don't count."""
    body = node.body
    if len(body) > 1 and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
        body = body[1:]
    return node.end_lineno - body[0].lineno + 1


# Private names of third-party objects that offer no public way to the same thing, and why.
FOREIGN_PRIVATE = {
    # DeepSpeed's engine: the one call that gathers ZeRO-3's full 16-bit weights (transformers saves through it too).
    "_zero3_consolidated_16bit_state_dict",
    # transformers' models declare the blocks that must stay whole here; FSDP wraps those (accelerate reads it too).
    "_no_split_modules",
    # vLLM's in-process engine client: its finalizer's shutdown destroys torch's default process group, which
    # under several colocated trainer processes (vLLM's external launcher) is the trainer's own.
    "_finalizer",
}
ATTRIBUTE_CALLS = ("getattr", "hasattr", "setattr", "delattr")


def private_reads(tree: ast.AST) -> list[tuple[int, str]]:
    """(line, name) of each `x._name` (or `getattr(x, "_name")`) where `x` is not the object itself
    (`self`, `cls`, `super()`): another object's private attribute. Dunders are public protocol."""

    def private(name: str) -> bool:
        return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))

    def own(node: ast.expr) -> bool:
        if isinstance(node, ast.Name):
            return node.id in ("self", "cls")
        return isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "super"

    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and private(node.attr) and not own(node.value):
            found.append((node.lineno, node.attr))
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in ATTRIBUTE_CALLS:
            name = node.args[1] if len(node.args) > 1 else None
            named = isinstance(name, ast.Constant) and isinstance(name.value, str) and private(name.value)
            if named and not own(node.args[0]):
                found.append((node.lineno, name.value))
    return sorted(found)


@pytest.mark.parametrize("path", modules(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_no_module_reads_another_objects_private_attributes(path):
    found = [(line, name) for line, name in private_reads(ast.parse(path.read_text())) if name not in FOREIGN_PRIVATE]
    assert not found, f"{path.relative_to(PACKAGE)} reads private attributes of other objects: {found}"


def test_the_private_attribute_check_sees_what_it_should():
    source = "a._x\nself._y\ncls._z\nsuper()._w\nb.__len__\ngetattr(c, '_v')\ngetattr(self, '_u')\nd.e._t\n"
    assert private_reads(ast.parse(source)) == [(1, "_x"), (6, "_v"), (8, "_t")]
