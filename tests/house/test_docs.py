"""The documentation that is generated stays in step with the code."""

from support import ROOT, run_python


def test_configuration_reference_is_current():
    proc = run_python(str(ROOT / "scripts" / "config_reference.py"), "--check")
    assert proc.returncode == 0, proc.stderr
