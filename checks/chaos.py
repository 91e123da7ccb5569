"""Reliability battery: the app under failures, through its public HTTP API.

    python checks/chaos.py [--only kill,memory,postgres] [--models tiny-starcoder,...] [--out FILE]

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

The harness (the app in-process, a /complete call, the rows) is checks/chaos_harness.py;
scenario 3 is checks/chaos_postgres.py.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import platform
import resource
import signal
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from checks.chaos_harness import (
    CALL_LIMIT_S,
    TAP,
    App,
    Call,
    Row,
    clear_error,
    complete,
)
from checks.chaos_postgres import scenario_postgres

TINY, SMOL = "tiny-starcoder", "smollm2-135m-instruct"
MODELS = (TINY, SMOL)
RECOVERY_LIMIT_S = 180.0


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
        warm = complete(
            app.url,
            app.complete_args(prompt="x = 1\n", model=model_id, max_new_tokens=4, temperature=0),
        )
        row.check(warm.event == "complete", f"warm-up request: {warm.event} {warm.message!r}")
        status, _ = app.healthz()
        row.check(status == 200, f"/healthz before the kill: {status}")
        restarts0 = app.metric("playground_worker_restarts")
        old_pid = engine.worker_pid

        calls = [Call() for _ in range(streams)]
        threads = []
        for prompt, call in zip(KILL_PROMPTS, calls, strict=False):
            args = app.complete_args(
                prompt=prompt,
                model=model_id,
                max_new_tokens=long,
                temperature=0,
                repetition_penalty=1.0,
            )
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
        nxt = complete(
            app.url,
            app.complete_args(
                prompt="def add(a, b):\n", model=model_id, max_new_tokens=16, temperature=0
            ),
        )
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
        budget.check(
            ok == len(calls),
            "requests that fit: "
            + ", ".join(f"{c.event} {c.message[:120]!r}" for c in calls if c.event != "complete"),
        )
        budget.note(
            f"{ok}/{len(calls)} concurrent requests of {max_new} new tokens (more than the cache "
            f"holds at once) succeeded in {time.monotonic() - start:.1f} s"
        )
        too_long = [
            ("max_new_tokens = limit", "def f():\n", limit),
            ("long prompt", "x = 1\n" * (limit // 2 + 40), 16),
        ]
        for name, prompt, new in too_long:
            c = complete(
                app.url,
                app.complete_args(prompt=prompt, model=SMOL, max_new_tokens=new, temperature=0),
            )
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
    row = Row(
        "real memory cap",
        f"{SMOL}, fresh worker, RLIMIT_AS = its address space + {margin_mb:g} MiB",
    )
    pid = engine.worker_pid
    restarts0 = engine.stats()["restarts"]
    if not hasattr(resource, "prlimit"):
        row.check(False, "resource.prlimit is not available on this platform")
        return row
    old = resource.getrlimit(resource.RLIMIT_AS)
    vm = _vm_size(pid)
    limit = vm + int(margin_mb * 2**20)
    resource.prlimit(pid, resource.RLIMIT_AS, (limit, old[1]))
    row.note(
        f"worker pid {pid} capped at {limit / 2**20:,.0f} MiB of address space "
        f"(it had {vm / 2**20:,.0f} MiB mapped)"
    )
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
        row.note(
            f"under the cap, request {i + 1}: {c.event} after {c.elapsed_s:.1f} s: "
            f"{c.message[:160]!r}"
        )
        row.check(c.event in ("complete", "error"), f"under the cap: {c.event} {c.message!r}")
        if c.event == "error":
            row.check(clear_error(c), f"under the cap, unclear error: {c.message!r}")
    died = engine.worker_pid != pid
    status, body = app.healthz()
    row.note(
        f"while capped: worker {'restarted' if died else 'still the same process'}, "
        f"/healthz {status} {body if status != 200 else ''}".rstrip()
    )
    if not died:
        with contextlib.suppress(ProcessLookupError):
            resource.prlimit(pid, resource.RLIMIT_AS, old)
        row.note("cap lifted (the same worker process)")
    # Recovery: a fresh request must now succeed and /healthz be 200, with no app restart.
    deadline = t0 + RECOVERY_LIMIT_S
    nxt = Call()
    while time.monotonic() < deadline:
        nxt = complete(
            app.url,
            app.complete_args(
                prompt="def add(a, b):\n", model=SMOL, max_new_tokens=8, temperature=0
            ),
        )
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
    row.note(
        f"recovered: next request {nxt.event}, /healthz {status}, "
        f"{time.monotonic() - t0:.1f} s after the cap; worker restarts "
        f"+{engine.stats()['restarts'] - restarts0}"
    )
    logged = [ln for ln in TAP.since(log_mark) if ln.startswith(("ERROR", "CRITICAL"))]
    for line in logged[:3]:
        row.note(f"server log: {line[:240]}")
    return row


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
