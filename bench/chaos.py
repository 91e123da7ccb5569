"""Reliability battery: the app under failures, through its public HTTP API.

    python bench/chaos.py [--only kill,memory,postgres] [--models tiny-starcoder,...] [--out FILE]

Three scenarios, each a result row (a markdown table at the end); the exit status is 1 if any
check fails. Everything runs on 127.0.0.1, bounded in count and time.

1. kill   For each embedded model: the real app in-process (as tests/conftest.py `_serve`),
          a few streams on that model through `POST /gradio_api/call/complete` + its SSE
          stream, then SIGKILL of the model's worker mid-stream. Checks: every in-flight stream
          ends with a clear error (no hang, no traceback), the worker restarts by itself (new
          pid, restarts +1 in /metrics), the next request succeeds, /healthz is 200 again.
2. memory SmolLM2 with a KV cache for ~256 tokens (--kv-cache-mb): requests that fit succeed
          (more than fit at once wait for room), longer ones are refused naming KV_CACHE_MB and
          the limit, no worker restart, healthy. Then a real memory cap on a freshly loaded
          worker (RLIMIT_AS via prlimit(2), 64 and 0 MiB above its address space; a cgroup is
          not ours to make here): what the user sees, and whether the app recovers once the
          cap is lifted (or the worker restarts).
3. postgres  The app on a throwaway PostgreSQL (.ci/postgres.sh), share writers on several
          threads through `POST /api/shares`, PostgreSQL stopped (fast) and started again on
          the same data dir and port in the middle. Checks: every acknowledged share (201 + id)
          reads back with its exact text; writes during the outage get 503 "busy or
          unavailable" (not 500, not a hang); writes after the restart succeed with no app
          restart (the pool recovers).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import platform
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import httpx  # noqa: E402

log = logging.getLogger("bench.chaos")

TINY, SMOL = "tiny-starcoder", "smollm2-135m-instruct"
MODELS = (TINY, SMOL)
CALL_LIMIT_S = 120.0  # no single generation call may take longer: beyond it, a hang
RECOVERY_LIMIT_S = 180.0


# -- results ---------------------------------------------------------------------------------


@dataclass
class Row:
    scenario: str
    target: str
    ok: bool = True
    result: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)

    def check(self, cond: bool, what: str) -> bool:
        if not cond:
            self.ok = False
            self.failures.append(what)
            log.error("FAIL %s/%s: %s", self.scenario, self.target, what)
        return cond

    def note(self, text: str) -> None:
        self.result.append(text)
        log.info("%s/%s: %s", self.scenario, self.target, text)

    def markdown(self) -> str:
        verdict = "pass" if self.ok else "**FAIL**: " + "; ".join(self.failures)
        cell = "; ".join(self.result).replace("|", "\\|").replace("\n", " ")
        return f"| {self.scenario} | {self.target} | {cell} | {verdict} |"


class LogTap(logging.Handler):
    """Keeps the app's WARNING+ lines (web process) so a row can quote them."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.name.startswith("bench."):
            return
        text = f"{record.levelname} {record.name}: {record.getMessage()}"
        if record.exc_info:
            text += f" [{_innermost(record.exc_info)}]"
        self.lines.append(text[:400])

    def since(self, n: int) -> list[str]:
        return self.lines[n:]


def _innermost(exc_info) -> str:
    """The exception's type and message and where it was raised (the last frame of ours)."""
    import traceback

    exc = exc_info[1]
    while exc is not None and (exc.__cause__ or exc.__context__) and not isinstance(exc, OSError):
        nxt = exc.__cause__ or exc.__context__
        if type(exc).__module__.startswith(("sqlalchemy", "psycopg")):
            break
        exc = nxt
    frames = [f for f in traceback.extract_tb(exc_info[2]) if str(ROOT / "app") in f.filename]
    where = (
        f" at {Path(frames[-1].filename).name}:{frames[-1].lineno} {frames[-1].name}()"
        if frames
        else ""
    )
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__module__}.{type(exc).__name__}: {first[:160]}{where}"


TAP = LogTap()


# -- the app in-process -----------------------------------------------------------------------


class App:
    """The real app (build_engines / build_app / BackgroundServer), as tests/conftest.py serves
    it, on a fresh data dir whose models/ reuses the repo's converted SmolLM2."""

    def __init__(self, *extra: str):
        self.data = Path(tempfile.mkdtemp(prefix="chaos-app-"))
        converted = ROOT / "data" / "models"
        if converted.is_dir():  # skip the 30-45 s GGUF conversion
            (self.data / "models").symlink_to(converted, target_is_directory=True)
        self.argv = ["--data-dir", str(self.data), "--port", "0", "--device", "cpu",
                     "--rate-limit", "0", "--max-batch", "4", *extra]  # fmt: skip

    def __enter__(self) -> App:
        self.engines = None
        try:
            from app.server import BackgroundServer, build_app, build_engines
            from app.settings import Settings

            self.engines = build_engines(Settings.load(self.argv, env={}))
            self.built = build_app(Settings.load(self.argv, env={}), self.engines, None)
            self.server = BackgroundServer(self.built.fastapi).__enter__()
        except BaseException:
            if self.engines is not None:
                self.engines.close()
            shutil.rmtree(self.data, ignore_errors=True)
            raise
        # uvicorn's logging config (applied as the server is built) does not propagate to the
        # root: tap its error log, where unhandled exceptions (500s) are written, here.
        uvicorn_log = logging.getLogger("uvicorn.error")
        if TAP not in uvicorn_log.handlers:
            uvicorn_log.addHandler(TAP)
        self.url = self.server.url
        self.http = httpx.Client(base_url=self.url, timeout=httpx.Timeout(60, connect=5))
        return self

    def __exit__(self, *exc) -> None:
        self.http.close()
        self.server.__exit__(*exc)
        self.engines.close()
        with contextlib.suppress(Exception):
            self.built.store.close()
        shutil.rmtree(self.data, ignore_errors=True)

    def engine(self, model_id: str):
        """The model's WorkerEngine (under the metrics wrapper), starting it if needed."""
        spec = self.engines.registry.get(model_id)
        engine = self.engines.get(spec)
        while hasattr(engine, "inner"):
            engine = engine.inner
        return engine

    def healthz(self) -> tuple[int, str]:
        try:
            r = self.http.get("healthz", timeout=15)
            return r.status_code, r.text[:200]
        except httpx.HTTPError as exc:
            return 0, f"{type(exc).__name__}: {exc}"

    def metric(self, name: str) -> float:
        text = self.http.get("metrics").text
        for line in text.splitlines():
            if line.startswith(name + " ") or line.startswith(name + "_total "):
                return float(line.split()[-1])
        return float("nan")

    def complete_args(self, **given) -> list:
        """/complete's positional data, in the order the app's API description gives."""
        info = self.http.get("gradio_api/info").json()
        params = info["named_endpoints"]["/complete"]["parameters"]
        names = [p["parameter_name"] for p in params]
        unknown = set(given) - set(names)
        assert not unknown, f"/complete has no parameter(s) {unknown}; it has {names}"
        return [
            given.get(n, p.get("parameter_default")) for n, p in zip(names, params, strict=True)
        ]


@dataclass
class Call:
    """One /complete call through HTTP + SSE, as a client sees it."""

    event: str = ""  # complete / error / hang / http / exception
    message: str = ""  # the error text a user sees, or the final output
    first_text_s: float | None = None
    elapsed_s: float = 0.0
    ended_at: float = 0.0  # time.monotonic() at the end
    updates: int = 0
    streaming: threading.Event = field(default_factory=threading.Event)
    finished: threading.Event = field(default_factory=threading.Event)


def complete(url: str, args: list, call: Call | None = None, limit_s: float = CALL_LIMIT_S) -> Call:
    call = call or Call()
    prompt = args[0]
    start = time.monotonic()
    try:
        with httpx.Client(base_url=url, timeout=httpx.Timeout(30, connect=5)) as c:
            # A session_hash of our own: without one the app refuses the call (400, see the
            # report in bench/RESULTS.md), though Gradio's /call route allows it.
            body = {"data": args, "session_hash": uuid.uuid4().hex}
            r = c.post("gradio_api/call/complete", json=body)
            if r.status_code != 200:
                call.event, call.message = "http", f"{r.status_code} {r.text[:300]}"
                return call
            path = f"gradio_api/call/complete/{r.json()['event_id']}"
            event = "message"
            with c.stream("GET", path) as sse:
                for line in sse.iter_lines():
                    if time.monotonic() - start > limit_s:
                        call.event, call.message = "hang", f"no end after {limit_s:.0f} s"
                        return call
                    if line.startswith("event:"):
                        event = line[6:].strip()
                    elif line.startswith("data:"):
                        data = _json(line[5:])
                        if event in ("generating", "complete") and _text(data) is not None:
                            call.updates += 1
                            if len(_text(data)) > len(prompt) and call.first_text_s is None:
                                call.first_text_s = time.monotonic() - start
                                call.streaming.set()
                        if event == "complete":
                            call.event, call.message = "complete", _text(data) or ""
                            return call
                        if event == "error":
                            call.event = "error"
                            if isinstance(data, dict):
                                call.message = str(data.get("error"))
                            else:
                                call.message = f"<opaque error payload: {line[5:].strip()[:200]}>"
                            return call
            call.event = call.event or "hang"
            call.message = call.message or "the stream closed without a result"
    except Exception as exc:  # a client-side failure is a result to report
        call.event, call.message = "exception", f"{type(exc).__name__}: {exc}"[:300]
    finally:
        call.ended_at = time.monotonic()
        call.elapsed_s = call.ended_at - start
        call.finished.set()
    return call


def _json(text: str):
    try:
        return json.loads(text)
    except ValueError:
        return None


def _text(data) -> str | None:
    if isinstance(data, list) and data and isinstance(data[0], str):
        return data[0]
    return None


def clear_error(call: Call) -> bool:
    """An error a user can read: our message, not a hang, a traceback or Gradio's null."""
    m = call.message or ""
    return (
        call.event == "error"
        and bool(m.strip())
        and m != "None"
        and "Traceback" not in m
        and not m.startswith("<opaque")
        and len(m) < 600
    )


# -- 1. kill -9 mid-stream ---------------------------------------------------------------------

# Prompts whose greedy continuation goes on (lists, repeated definitions): streams that end early
# on their own (end of text, SmolLM2's closing fence) would not be mid-stream at the kill.
KILL_PROMPTS = [
    "PRIMES = [2, 3, 5, 7, 11, 13, ",
    "WORDS = [\n    'apple',\n    'banana',\n    'cherry',\n",
    "def f0():\n    return 0\n\n\ndef f1():\n    return 1\n\n\ndef f2():\n",
]


def scenario_kill(model_id: str, streams: int = 3) -> Row:
    row = Row("kill -9 mid-stream", model_id)
    with App() as app:
        engine = app.engine(model_id)  # started (and loaded) before the clock runs
        long = 400 if model_id == TINY else 200
        warm = complete(app.url, app.complete_args(prompt="x = 1\n", model=model_id,
                                                   max_new_tokens=4, temperature=0))  # fmt: skip
        row.check(warm.event == "complete", f"warm-up request: {warm.event} {warm.message!r}")
        status, _ = app.healthz()
        row.check(status == 200, f"/healthz before the kill: {status}")
        restarts0 = app.metric("playground_worker_restarts")
        old_pid = engine.worker_pid

        calls = [Call() for _ in range(streams)]
        threads = []
        for prompt, call in zip(KILL_PROMPTS, calls, strict=False):
            args = app.complete_args(prompt=prompt, model=model_id, max_new_tokens=long,
                                     temperature=0, repetition_penalty=1.0)  # fmt: skip
            t = threading.Thread(target=complete, args=(app.url, args, call), daemon=True)
            t.start()
            threads.append(t)
        deadline = time.monotonic() + 60
        # Kill once every stream still running has shown text (and at least one is running).
        while time.monotonic() < deadline and not (
            all(c.streaming.is_set() or c.finished.is_set() for c in calls)
            and any(not c.finished.is_set() for c in calls)
        ):
            time.sleep(0.02)
        in_flight = [c for c in calls if c.streaming.is_set() and not c.finished.is_set()]
        log_mark = len(TAP.lines)
        t_kill = time.monotonic()
        os.kill(old_pid, signal.SIGKILL)
        row.note(f"killed worker pid {old_pid} with {len(in_flight)}/{streams} streams mid-text")
        row.check(
            len(in_flight) > 0,
            "no stream was mid-text at the kill: "
            + "; ".join(
                f"{c.event or 'running'} after {c.updates} updates {c.message[:80]!r}"
                for c in calls
            ),
        )

        for t in threads:
            t.join(CALL_LIMIT_S + 10)
        # A stream that ended by itself just before the signal was not in flight after all.
        in_flight = [c for c in in_flight if not (c.event == "complete" and c.ended_at <= t_kill)]
        for c in in_flight:
            row.check(clear_error(c), f"in-flight stream ended with {c.event}: {c.message!r}")
        if in_flight:
            ended = max(c.ended_at for c in in_flight) - t_kill
            row.note(
                f"{len(in_flight)} in-flight streams ended with {sorted({c.event for c in in_flight})}"
                f" within {ended * 1000:.0f} ms of the kill: {in_flight[0].message!r}"
            )

        # The next request: it waits for the new worker, then must succeed.
        nxt = complete(app.url, app.complete_args(prompt="def add(a, b):\n", model=model_id,
                                                  max_new_tokens=16, temperature=0))  # fmt: skip
        t_ok = time.monotonic() - t_kill
        row.check(nxt.event == "complete", f"next request: {nxt.event} {nxt.message!r}")
        new_pid = engine.worker_pid
        row.check(new_pid not in (None, old_pid), f"worker pid after restart: {new_pid}")
        status, body = 0, ""
        while time.monotonic() - t_kill < RECOVERY_LIMIT_S:
            status, body = app.healthz()
            if status == 200:
                break
            time.sleep(0.25)
        t_health = time.monotonic() - t_kill
        row.check(status == 200, f"/healthz after the kill: {status} {body}")
        restarts = app.metric("playground_worker_restarts") - restarts0
        row.check(restarts == 1, f"playground_worker_restarts went up by {restarts}, not 1")
        row.note(
            f"new worker pid {new_pid}; next request ok {t_ok:.1f} s after the kill; /healthz 200 "
            f"after {t_health:.1f} s; restarts +{restarts:g}"
        )
        logged = [ln for ln in TAP.since(log_mark) if "died" in ln or "Traceback" in ln]
        if logged:
            row.note(f"server log: {logged[0]}")
    return row


# -- 2. small memory budget -------------------------------------------------------------------


def scenario_memory(kv_cache_mb: int, cap_margins_mb: list[float]) -> list[Row]:
    budget = Row("small memory budget", f"{SMOL}, KV_CACHE_MB={kv_cache_mb}")
    rows = [budget]
    with App("--kv-cache-mb", str(int(kv_cache_mb))) as app:
        engine = app.engine(SMOL)
        limit = int(engine.info.context_length)
        pid = engine.worker_pid
        budget.note(f"per-request limit {limit} tokens (model context 8192), worker pid {pid}")
        fits = ["def add(a, b):\n", "class Point:\n", "def is_prime(n):\n", "import json\n"]
        max_new = max(16, limit // 2 - 32)
        calls = [Call() for _ in fits]
        threads = [
            threading.Thread(
                target=complete,
                args=(
                    app.url,
                    app.complete_args(prompt=p, model=SMOL, max_new_tokens=max_new, temperature=0),
                    c,
                ),
                daemon=True,
            )
            for p, c in zip(fits, calls, strict=True)
        ]
        start = time.monotonic()
        for t in threads:
            t.start()
        for t in threads:
            t.join(CALL_LIMIT_S + 10)
        ok = sum(c.event == "complete" for c in calls)
        budget.check(ok == len(calls), "requests that fit: " + ", ".join(
            f"{c.event} {c.message[:120]!r}" for c in calls if c.event != "complete"))  # fmt: skip
        budget.note(
            f"{ok}/{len(calls)} concurrent requests of {max_new} new tokens (more than the cache "
            f"holds at once) succeeded in {time.monotonic() - start:.1f} s"
        )
        too_long = [
            ("max_new_tokens = limit", "def f():\n", limit),
            ("long prompt", "x = 1\n" * (limit // 2 + 40), 16),
        ]
        for name, prompt, new in too_long:
            c = complete(app.url, app.complete_args(prompt=prompt, model=SMOL,
                                                    max_new_tokens=new, temperature=0))  # fmt: skip
            named = "KV_CACHE_MB" in c.message and str(limit) in c.message
            budget.check(clear_error(c) and named, f"too long ({name}): {c.event} {c.message!r}")
            if name == "max_new_tokens = limit":
                budget.note(f"too long: {c.message!r}")
        restarts = engine.stats()["restarts"]
        status, body = app.healthz()
        budget.check(restarts == 0 and engine.worker_pid == pid, f"worker restarts: {restarts}")
        budget.check(status == 200, f"/healthz: {status} {body}")
        budget.note(f"worker restarts {restarts}; /healthz {status}")

    # A real cap: RLIMIT_AS on a freshly started worker (loaded, no request served yet), at or a
    # little above what it has mapped. A warm worker reuses the memory of earlier requests, and
    # a cap then changes nothing (measured: 0 MiB of headroom, requests still succeed).
    for margin in cap_margins_mb:
        with App("--kv-cache-mb", str(int(kv_cache_mb))) as app:
            rows.append(cap_run(app, app.engine(SMOL), margin))
    return rows


def _vm_size(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmSize:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmSize")


def cap_run(app: App, engine, margin_mb: float) -> Row:
    row = Row("real memory cap", f"{SMOL}, fresh worker, RLIMIT_AS = its address space + "
              f"{margin_mb:g} MiB")  # fmt: skip
    pid = engine.worker_pid
    restarts0 = engine.stats()["restarts"]
    if not hasattr(resource, "prlimit"):
        row.check(False, "resource.prlimit is not available on this platform")
        return row
    old = resource.getrlimit(resource.RLIMIT_AS)
    vm = _vm_size(pid)
    limit = vm + int(margin_mb * 2**20)
    resource.prlimit(pid, resource.RLIMIT_AS, (limit, old[1]))
    row.note(f"worker pid {pid} capped at {limit / 2**20:,.0f} MiB of address space "
             f"(it had {vm / 2**20:,.0f} MiB mapped)")  # fmt: skip
    log_mark = len(TAP.lines)
    prompt = "def parse(line):\n    # " + "split the fields and convert them, " * 20 + "\n"
    t0 = time.monotonic()
    calls = []
    for i in range(2):  # two in a row: the first may only find the limit
        c = complete(
            app.url,
            app.complete_args(
                prompt=prompt if i == 0 else "def g(x):\n",
                model=SMOL,
                max_new_tokens=32,
                temperature=0,
            ),
        )
        calls.append(c)
        row.note(f"under the cap, request {i + 1}: {c.event} after {c.elapsed_s:.1f} s: "
                 f"{c.message[:160]!r}")  # fmt: skip
        row.check(c.event in ("complete", "error"), f"under the cap: {c.event} {c.message!r}")
        if c.event == "error":
            row.check(clear_error(c), f"under the cap, unclear error: {c.message!r}")
    died = engine.worker_pid != pid
    status, body = app.healthz()
    row.note(f"while capped: worker {'restarted' if died else 'still the same process'}, "
             f"/healthz {status} {body if status != 200 else ''}".rstrip())  # fmt: skip
    if not died:
        with contextlib.suppress(ProcessLookupError):
            resource.prlimit(pid, resource.RLIMIT_AS, old)
        row.note("cap lifted (the same worker process)")
    # Recovery: a fresh request must now succeed and /healthz be 200, with no app restart.
    deadline = t0 + RECOVERY_LIMIT_S
    nxt = Call()
    while time.monotonic() < deadline:
        nxt = complete(app.url, app.complete_args(prompt="def add(a, b):\n", model=SMOL,
                                                  max_new_tokens=8, temperature=0))  # fmt: skip
        if nxt.event == "complete":
            break
        time.sleep(1)
    status, body = 0, ""
    while time.monotonic() < deadline:
        status, body = app.healthz()
        if status == 200:
            break
        time.sleep(0.5)
    row.check(nxt.event == "complete", f"after the cap: {nxt.event} {nxt.message!r}")
    row.check(status == 200, f"/healthz after the cap: {status} {body}")
    row.note(f"recovered: next request {nxt.event}, /healthz {status}, "
             f"{time.monotonic() - t0:.1f} s after the cap; worker restarts "
             f"+{engine.stats()['restarts'] - restarts0}")  # fmt: skip
    logged = [ln for ln in TAP.since(log_mark) if ln.startswith(("ERROR", "CRITICAL"))]
    for line in logged[:3]:
        row.note(f"server log: {line[:240]}")
    return row


# -- 3. PostgreSQL restarted under load --------------------------------------------------------


class Postgres:
    """A throwaway server from .ci/postgres.sh; restarted with pg_ctl on the same port."""

    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="chaos-pg-"))
        self.root.chmod(0o755)
        self.dir = self.root / "pg"
        out = subprocess.run([str(ROOT / ".ci" / "postgres.sh"), "start", str(self.dir)],
                             capture_output=True, text=True, timeout=120, check=True)  # fmt: skip
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
        opts = (f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.dir} -c fsync=on "
                "-c max_connections=300")  # fmt: skip
        self._pg_ctl("-l", str(self.dir / "server.log"), "-w", "-o", opts, "start")

    def close(self) -> None:
        subprocess.run([str(ROOT / ".ci" / "postgres.sh"), "stop", str(self.dir)],
                       capture_output=True, timeout=60)  # fmt: skip
        shutil.rmtree(self.root, ignore_errors=True)


@dataclass
class Write:
    t0: float
    t1: float
    text: str
    status: int  # 0: no response
    body: str


def scenario_postgres(writers: int, before_s: float, down_s: float, after_s: float) -> Row:
    row = Row("PostgreSQL restarted under load", f"{writers} writer threads, "
              f"{down_s:g} s outage")  # fmt: skip
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
                            r = c.post("api/shares", content=json.dumps(
                                {"mode": "completion", "prompt": "", "output": text}),
                                headers={"content-type": "application/json"})  # fmt: skip
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

            threads = [threading.Thread(target=writer, args=(i,), daemon=True)
                       for i in range(writers)]  # fmt: skip
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

            row.note(f"{len(writes)} writes: before the stop {counts(before)}; during the outage "
                     f"{counts(outage)}; around stop/start {counts(edges)}; after the restart "
                     f"{counts(after)}")  # fmt: skip
            bad = [w for w in writes if w.status not in (201, 503)]
            row.check(not bad, f"{len(bad)} writes got neither 201 nor 503, e.g. "
                      f"{bad[0].status} {bad[0].body!r}" if bad else "")  # fmt: skip
            unclear = [w for w in writes if w.status == 503 and "busy or unavailable" not in w.body]
            row.check(not unclear, f"503 without the message: {unclear[:1]}")
            row.check(bool(outage), "no write fell inside the outage")
            row.check(all(w.status == 503 for w in outage),
                      f"writes during the outage: {counts(outage)}")  # fmt: skip
            late = [w for w in after if w.t0 >= t_up1 + 1.0]
            row.check(bool(late) and all(w.status == 201 for w in late),
                      f"writes from 1 s after the restart: {counts(late)}")  # fmt: skip
            first_ok = min((w.t0 - t_up1 for w in after if w.status == 201), default=None)
            failed_after = [w for w in after if w.status != 201]
            row.note(f"first write after the restart ok at +{first_ok:.2f} s; "
                     f"{len(failed_after)} failed after it was up" if first_ok is not None
                     else "no write succeeded after the restart")  # fmt: skip

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
                stored = set(conn.execute(sql("SELECT output FROM shares WHERE output LIKE :p"),
                                          {"p": f"# chaos {run} %"}).scalars())  # fmt: skip
            refused_but_saved = sum(1 for w in writes if w.status != 201 and w.text in stored)
            row.note(f"{len(acked)} acknowledged, {len(acked) - len(lost) - len(wrong)} read back "
                     f"exact (GET /s/<id> 200 and the stored text); {refused_but_saved} refused "
                     f"writes were stored anyway")  # fmt: skip
            read_outage = [s for t, s in reads if t_down1 <= t <= t_up0]
            read_after = [s for t, s in reads if t >= t_up1 + 1.0]
            row.note(f"reads of a share (GET /s/<id>) during the outage: "
                     f"{_tally(read_outage)}; after: {_tally(read_after)}")  # fmt: skip
            row.check(all(s in (200, 503) for s in read_outage),
                      f"reads during the outage: {_tally(read_outage)}")  # fmt: skip
            row.check(all(s == 200 for s in read_after), f"reads after: {_tally(read_after)}")
            row.note(f"outage {t_up0 - t_down1:.1f} s (stop took {t_down1 - t_down0:.1f} s, "
                     f"start {t_up1 - t_up0:.1f} s); no app restart")  # fmt: skip
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


# -- main -------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--only", default="kill,memory,postgres", help="scenarios, comma-separated")
    p.add_argument("--models", default=",".join(MODELS), help="models for the kill scenario")
    p.add_argument(
        "--kv-cache-mb",
        type=int,
        default=13,
        help="SmolLM2's KV budget: 13 MiB holds 9 pages of 32 tokens (256 per request)",
    )
    p.add_argument(
        "--cap-margins-mb",
        default="64,0",
        help="RLIMIT_AS headroom above the worker's address space, one run each",
    )
    p.add_argument("--writers", type=int, default=6)
    p.add_argument("--outage-s", type=float, default=4.0)
    p.add_argument("--out", help="also write the results table here")
    args = p.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    logging.getLogger().addHandler(TAP)
    logging.getLogger("httpx").setLevel(logging.WARNING)
    only = set(args.only.split(","))

    rows: list[Row] = []
    t0 = time.monotonic()
    if "kill" in only:
        for model_id in args.models.split(","):
            rows.append(scenario_kill(model_id))
    if "memory" in only:
        rows.extend(
            scenario_memory(args.kv_cache_mb, [float(m) for m in args.cap_margins_mb.split(",")])
        )
    if "postgres" in only:
        rows.append(scenario_postgres(args.writers, 3.0, args.outage_s, 6.0))

    table = [
        f"Machine: {platform.machine()}, {os.cpu_count()} cores, Python "
        f"{platform.python_version()}; battery took {time.monotonic() - t0:.0f} s.",
        "",
        "| scenario | target | result | verdict |",
        "|---|---|---|---|",
        *(r.markdown() for r in rows),
    ]
    print("\n".join(table))
    if args.out:
        Path(args.out).write_text("\n".join(table) + "\n", encoding="utf-8")
    return 0 if all(r.ok for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
