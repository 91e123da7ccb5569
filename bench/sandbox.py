"""A sandbox for model-written code: a fresh, isolated Python process with limits and a timeout.

Isolation is a fresh interpreter (-I: no site-packages path tricks, no env), an empty temp
working directory, memory and file-size limits, and a killed process group on timeout. It is not
a security boundary against a malicious model; HumanEval's own README asks for a container.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Execution:
    passed: bool
    result: str  # "passed", "timed out", or "failed: <last line of the error>"


def _limit_resources() -> None:  # pragma: no cover - runs in the child process
    import resource

    gib = 1024**3
    resource.setrlimit(resource.RLIMIT_AS, (2 * gib, 2 * gib))  # runaway allocations
    resource.setrlimit(resource.RLIMIT_FSIZE, (10 * 1024**2, 10 * 1024**2))  # disk filling
    os.setsid()  # own process group, so a timeout kills any children too


def execute(source: str, timeout: float = 10.0) -> Execution:
    """Run untrusted model code in a separate, isolated Python process with a timeout.

    Isolation is a fresh interpreter (-I: no site-packages path tricks, no env), an empty temp
    working directory, memory and file-size limits, and a killed process group on timeout. It
    is not a security boundary against a malicious model; HumanEval's own README asks for a
    container for that.
    """
    with tempfile.TemporaryDirectory(prefix="humaneval-") as work:
        path = Path(work) / "program.py"
        path.write_text(source, encoding="utf-8")
        proc = subprocess.Popen(
            [sys.executable, "-I", "-B", str(path)],
            cwd=work,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            env={"PATH": os.environ.get("PATH", ""), "PYTHONHASHSEED": "0"},
            preexec_fn=_limit_resources,
        )
        try:
            _, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            _kill_group(proc)
            proc.communicate()
            return Execution(False, "timed out")
    if proc.returncode == 0:
        return Execution(True, "passed")
    lines = [ln for ln in err.decode("utf-8", "replace").splitlines() if ln.strip()]
    return Execution(False, "failed: " + (lines[-1][:200] if lines else f"exit {proc.returncode}"))


def _kill_group(proc: subprocess.Popen) -> None:
    import signal

    with contextlib.suppress(ProcessLookupError):  # already gone
        os.killpg(proc.pid, signal.SIGKILL)
