"""`python app.py` stops promptly on SIGTERM (docker stop, a Space restart) while pages are open,
and takes its model worker with it."""

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
from gradio_client import Client

ROOT = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _children(pid: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie has exited; only its parent has not collected it yet.
    stat = Path(f"/proc/{pid}/stat")
    return stat.exists() and stat.read_text().split(") ", 1)[1][0] != "Z"


def test_sigterm_with_an_open_page_exits_within_seconds(attribution_index, tmp_path):
    port = _free_port()
    url = f"http://127.0.0.1:{port}/"
    argv = [
        sys.executable, "app.py", "--model", "tiny-starcoder", "--device", "cpu",
        "--port", str(port), "--host", "127.0.0.1", "--data-dir", str(tmp_path),
        "--index-url", attribution_index.location,
    ]  # fmt: skip
    log = tmp_path / "app.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(argv, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(url + "healthz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.3)
        # The model workers, not multiprocessing's resource tracker (it leaves on its own
        # once it sees its parent gone, a moment later).
        workers = [p for p in _children(proc.pid) if b"spawn_main" in _cmdline(p)]
        assert workers, "the model runs in a worker process"
        # An open page: gradio_client, like a browser tab, keeps a heartbeat stream open.
        page = Client(url, verbose=False, download_files=False)
        assert page.predict(prompt="def f(", max_new_tokens=2, api_name="/complete")
        start = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        rc = proc.wait(timeout=30)  # before the fix: still running after 40 s
        took = time.monotonic() - start
        assert rc == 128 + signal.SIGTERM, log.read_text()[-2000:]  # the shell's convention
        assert "Application shutdown complete" in log.read_text()
        assert took < 15, took
        assert not [w for w in workers if _alive(w)], "the model worker outlived the app"
        page.close()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
