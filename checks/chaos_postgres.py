"""Scenario 3 of the reliability battery (checks/chaos.py): PostgreSQL stopped and started again
under share writers, on a throwaway server from .ci/postgres.sh."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import httpx

from checks.chaos_harness import ROOT, TAP, App, Row


class Postgres:
    """A throwaway server from .ci/postgres.sh; restarted with pg_ctl on the same port."""

    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="chaos-pg-"))
        self.root.chmod(0o755)
        self.dir = self.root / "pg"
        out = subprocess.run(
            [str(ROOT / ".ci" / "postgres.sh"), "start", str(self.dir)],
            capture_output=True,
            text=True,
            timeout=120,
            check=True,
        )
        self.url = out.stdout.strip().splitlines()[-1]
        self.port = int(self.url.rsplit(":", 1)[1].split("/")[0])
        bins = sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=lambda p: int(p.parent.name))
        self.pg_ctl = str(bins[-1] / "pg_ctl")

    def _pg_ctl(self, *args: str) -> None:
        cmd = [self.pg_ctl, "-D", str(self.dir / "db"), *args]
        if os.geteuid() == 0:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        subprocess.run(cmd, check=True, timeout=60, capture_output=True)

    def stop(self) -> None:
        self._pg_ctl("-m", "fast", "-w", "stop")

    def start(self) -> None:
        opts = (
            f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.dir} -c fsync=on "
            "-c max_connections=300"
        )
        self._pg_ctl("-l", str(self.dir / "server.log"), "-w", "-o", opts, "start")

    def close(self) -> None:
        subprocess.run(
            [str(ROOT / ".ci" / "postgres.sh"), "stop", str(self.dir)],
            capture_output=True,
            timeout=60,
        )
        shutil.rmtree(self.root, ignore_errors=True)


@dataclass
class Write:
    t0: float
    t1: float
    text: str
    status: int  # 0: no response
    body: str


def scenario_postgres(writers: int, before_s: float, down_s: float, after_s: float) -> Row:
    row = Row("PostgreSQL restarted under load", f"{writers} writer threads, {down_s:g} s outage")
    pg = Postgres()
    try:
        with App("--database-url", pg.url, "--share-rate", "10000000") as app:
            stop = threading.Event()
            writes: list[Write] = []
            reads: list[tuple[float, int]] = []
            lock = threading.Lock()
            run = uuid.uuid4().hex[:8]

            def writer(i: int) -> None:
                n = 0
                with httpx.Client(base_url=app.url, timeout=httpx.Timeout(30, connect=5)) as c:
                    while not stop.is_set():
                        n += 1
                        text = f"# chaos {run} writer {i} share {n}\nprint({i} * {n})\n"
                        t0 = time.monotonic()
                        try:
                            r = c.post(
                                "api/shares",
                                content=json.dumps(
                                    {"mode": "completion", "prompt": "", "output": text}
                                ),
                                headers={"content-type": "application/json"},
                            )
                            w = Write(t0, time.monotonic(), text, r.status_code, r.text[:300])
                        except httpx.HTTPError as exc:
                            w = Write(t0, time.monotonic(), text, 0, f"{type(exc).__name__}: {exc}")
                        with lock:
                            writes.append(w)
                        time.sleep(0.02)

            def reader() -> None:  # reads of the first shares, through the outage too
                with httpx.Client(base_url=app.url, timeout=httpx.Timeout(30, connect=5)) as c:
                    while not stop.is_set():
                        with lock:
                            first = next((w for w in writes if w.status == 201), None)
                        if first is not None:
                            sid = json.loads(first.body)["id"]
                            t0 = time.monotonic()
                            try:
                                status = c.get(f"s/{sid}").status_code
                            except httpx.HTTPError:
                                status = 0
                            reads.append((t0, status))
                        time.sleep(0.1)

            threads = [
                threading.Thread(target=writer, args=(i,), daemon=True) for i in range(writers)
            ]
            threads.append(threading.Thread(target=reader, daemon=True))
            log_mark = len(TAP.lines)
            for t in threads:
                t.start()
            time.sleep(before_s)
            t_down0 = time.monotonic()
            pg.stop()
            t_down1 = time.monotonic()  # fully stopped
            time.sleep(down_s)
            t_up0 = time.monotonic()
            pg.start()
            t_up1 = time.monotonic()  # accepting connections
            time.sleep(after_s)
            stop.set()
            for t in threads:
                t.join(60)
            row.check(not any(t.is_alive() for t in threads), "a client thread hung")

            before = [w for w in writes if w.t1 < t_down0]
            outage = [w for w in writes if w.t0 >= t_down1 and w.t1 <= t_up0]
            edges = [w for w in writes if w not in before and w not in outage and w.t0 < t_up1]
            after = [w for w in writes if w.t0 >= t_up1]
            acked = [w for w in writes if w.status == 201]

            def counts(ws: list[Write]) -> str:
                tally: dict[int, int] = {}
                for w in ws:
                    tally[w.status] = tally.get(w.status, 0) + 1
                return ", ".join(f"{n} x {s or 'no response'}" for s, n in sorted(tally.items()))

            kinds: dict[tuple[int, str], list[Write]] = {}
            for w in writes:
                if w.status != 201:
                    kinds.setdefault((w.status, w.body[:110]), []).append(w)
            for (status, body), ws in sorted(kinds.items(), key=lambda kv: -len(kv[1])):
                took = max(w.t1 - w.t0 for w in ws)
                row.note(f"{len(ws)} x {status or 'no response'} {body!r} (slowest {took:.1f} s)")

            row.note(
                f"{len(writes)} writes: before the stop {counts(before)}; during the outage "
                f"{counts(outage)}; around stop/start {counts(edges)}; after the restart "
                f"{counts(after)}"
            )
            bad = [w for w in writes if w.status not in (201, 503)]
            row.check(
                not bad,
                f"{len(bad)} writes got neither 201 nor 503, e.g. {bad[0].status} {bad[0].body!r}"
                if bad
                else "",
            )
            unclear = [w for w in writes if w.status == 503 and "busy or unavailable" not in w.body]
            row.check(not unclear, f"503 without the message: {unclear[:1]}")
            row.check(bool(outage), "no write fell inside the outage")
            row.check(
                all(w.status == 503 for w in outage), f"writes during the outage: {counts(outage)}"
            )
            late = [w for w in after if w.t0 >= t_up1 + 1.0]
            row.check(
                bool(late) and all(w.status == 201 for w in late),
                f"writes from 1 s after the restart: {counts(late)}",
            )
            first_ok = min((w.t0 - t_up1 for w in after if w.status == 201), default=None)
            failed_after = [w for w in after if w.status != 201]
            row.note(
                f"first write after the restart ok at +{first_ok:.2f} s; "
                f"{len(failed_after)} failed after it was up"
                if first_ok is not None
                else "no write succeeded after the restart"
            )

            # Nothing saved is lost: every acknowledged share reads back, exactly.
            lost, wrong = [], []
            with httpx.Client(base_url=app.url, timeout=30) as c:
                for w in acked:
                    sid = json.loads(w.body)["id"]
                    page = c.get(f"s/{sid}")
                    share = app.built.store.get(sid)
                    if page.status_code != 200 or share is None:
                        lost.append((sid, page.status_code))
                    elif share.output != w.text or f"chaos {run} writer" not in page.text:
                        wrong.append(sid)
            row.check(not lost, f"{len(lost)} acknowledged shares missing: {lost[:3]}")
            row.check(not wrong, f"{len(wrong)} shares read back with other text: {wrong[:3]}")
            # Writes answered 503 that were committed all the same (ambiguous commits): not a
            # loss, but worth knowing.
            from sqlalchemy import text as sql

            with app.built.store.engine.connect() as conn:
                stored = set(
                    conn.execute(
                        sql("SELECT output FROM shares WHERE output LIKE :p"),
                        {"p": f"# chaos {run} %"},
                    ).scalars()
                )
            refused_but_saved = sum(1 for w in writes if w.status != 201 and w.text in stored)
            row.note(
                f"{len(acked)} acknowledged, {len(acked) - len(lost) - len(wrong)} read back "
                f"exact (GET /s/<id> 200 and the stored text); {refused_but_saved} refused "
                f"writes were stored anyway"
            )
            read_outage = [s for t, s in reads if t_down1 <= t <= t_up0]
            read_after = [s for t, s in reads if t >= t_up1 + 1.0]
            row.note(
                f"reads of a share (GET /s/<id>) during the outage: "
                f"{_tally(read_outage)}; after: {_tally(read_after)}"
            )
            row.check(
                all(s in (200, 503) for s in read_outage),
                f"reads during the outage: {_tally(read_outage)}",
            )
            row.check(all(s == 200 for s in read_after), f"reads after: {_tally(read_after)}")
            row.note(
                f"outage {t_up0 - t_down1:.1f} s (stop took {t_down1 - t_down0:.1f} s, "
                f"start {t_up1 - t_up0:.1f} s); no app restart"
            )
            errors = [ln for ln in TAP.since(log_mark) if ln.startswith("ERROR")]
            tally: dict[str, int] = {}
            for ln in errors:
                tally[ln] = tally.get(ln, 0) + 1
            for ln, n in sorted(tally.items(), key=lambda kv: -kv[1])[:4]:
                row.note(f"server log, {n} x: {ln}")
    finally:
        pg.close()
    return row


def _tally(statuses: list[int]) -> str:
    tally: dict[int, int] = {}
    for s in statuses:
        tally[s] = tally.get(s, 0) + 1
    return ", ".join(f"{n} x {s or 'no response'}" for s, n in sorted(tally.items())) or "none"
