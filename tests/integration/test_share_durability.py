"""A share that was acknowledged survives the writer being killed with SIGKILL mid-stream."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

from app.shares.store import Store

ROOT = Path(__file__).resolve().parents[2]

# Writes shares forever; prints "<id> <n>" only after Store.create has returned (= committed).
WRITER = """
import sys
from app.shares.store import Store
store = Store(sys.argv[1], writes_per_window=10**9)
name = sys.argv[2]
n = 0
while True:
    made = store.create(mode="completion", prompt="", output=f"{name} share {n}\\n" * 20,
                        parameters={"n": n}, client_id=name)
    print(made.share.id, n, flush=True)
    n += 1
"""


def test_sigkill_mid_stream_loses_no_acknowledged_share(tmp_path):
    db = tmp_path / "playground.db"
    url = f"sqlite:///{db}"
    Store(url, writes_per_window=30).close()  # migrate once, so both writers start writing at once
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    writers = {
        name: subprocess.Popen(
            [sys.executable, "-c", WRITER, url, name],
            stdout=subprocess.PIPE,
            text=True,
            env=env,
            cwd=ROOT,
        )
        for name in ("w1", "w2")  # two processes: the busy timeout must arbitrate between them
    }
    acked: dict[str, list[tuple[str, int]]] = {name: [] for name in writers}

    def read(name: str) -> None:
        for line in writers[name].stdout:
            # A line cut by the kill (its buffer written in two, the second never) was never
            # an acknowledgement: only whole lines count.
            if line.endswith("\n"):
                sid, n = line.split()
                acked[name].append((sid, int(n)))

    readers = [threading.Thread(target=read, args=(name,), daemon=True) for name in writers]
    for t in readers:
        t.start()
    deadline = time.monotonic() + 30
    while min(len(v) for v in acked.values()) < 40:
        assert time.monotonic() < deadline, f"writers too slow: {acked}"
        assert all(p.poll() is None for p in writers.values()), "a writer died on its own"
        time.sleep(0.01)
    for p in writers.values():
        p.send_signal(signal.SIGKILL)  # mid-stream: they are still writing
    for p in writers.values():
        p.wait(10)
        assert p.returncode == -signal.SIGKILL
    for t in readers:
        t.join(10)

    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        stored = {row[0] for row in conn.execute("SELECT id FROM shares")}
    conn.close()
    everything = [(name, sid, n) for name, items in acked.items() for sid, n in items]
    assert len(everything) >= 80
    assert {sid for _, sid, _ in everything} <= stored

    store = Store(url, writes_per_window=30)
    for name, sid, n in everything:
        share = store.get(sid)
        assert share.output == f"{name} share {n}\n" * 20 and share.parameters == {"n": n}
    store.close()
