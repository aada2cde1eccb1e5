"""Triton kernels on CPUs: Triton's interpreter runs a kernel's own source with NumPy. It reads
TRITON_INTERPRET when a kernel is defined, so each check runs as a script in a fresh interpreter."""

import importlib.util
import os
import subprocess
import sys
import textwrap

import pytest

needs_triton = pytest.mark.skipif(importlib.util.find_spec("triton") is None, reason="needs triton")


def run_interpreted(script: str) -> str:
    """Run `script` (indented as in the test) with TRITON_INTERPRET=1; its stdout, or fail with its stderr."""
    env = os.environ | {"TRITON_INTERPRET": "1"}
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script)], env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout
