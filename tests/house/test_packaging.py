"""The built wheel, installed on its own, runs from any folder: the study presets, the lab's base
models and its data sets are package data and plug-in entry points, not files of this checkout."""

import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from support import ROOT


@pytest.mark.slow
def test_installed_wheel_runs_the_lab_demo_from_another_folder(tmp_path):
    wheels = tmp_path / "wheels"
    pip = [sys.executable, "-m", "pip", "-q", "--disable-pip-version-check"]
    subprocess.run([*pip, "wheel", "--no-deps", "--no-build-isolation", str(ROOT), "-w", str(wheels)], check=True)
    # A fresh environment that sees this one's dependencies but not its editable checkout: a .pth
    # line adds the dependencies' folder, whose own .pth files (the editable finder) are not read.
    env = tmp_path / "env"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(env)], check=True)
    python = env / "bin" / "python"
    site = Path(
        subprocess.run(
            [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    )
    (site / "dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    wheel = next(wheels.glob("vlm_grpo-*.whl"))
    subprocess.run([*pip, "install", "--no-deps", "--no-index", "--target", str(site), str(wheel)], check=True)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    where = subprocess.run(
        [str(python), "-c", "import vlm_grpo; print(vlm_grpo.__file__)"], cwd=elsewhere, capture_output=True, text=True
    )
    assert where.stdout.startswith(str(site)), where.stdout + where.stderr
    demo = subprocess.run(
        [str(python), "-m", "vlm_grpo.cli", "lab", "demo", "--out", "demo", "--steps", "2", "--n", "4"],
        cwd=elsewhere,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert demo.returncode == 0, demo.stdout[-2000:] + demo.stderr[-3000:]
    assert (elsewhere / "demo" / "report" / "report.md").is_file()
    study = subprocess.run(
        [str(python), "-m", "vlm_grpo.cli", "study", "--preset", "tiny", "--seeds", "1", "--steps", "1", "--out", "s"],
        cwd=elsewhere,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert study.returncode == 0, study.stderr[-3000:]
