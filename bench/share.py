"""Share create/read latency through the HTTP API, SQLite and PostgreSQL side by side.

    python bench/share.py [--n 300] [--threads 8] [--out FILE]  (the table for bench/RESULTS.md)

Each database gets its own uvicorn server process (so the client does not share a GIL with it).
Requests alternate between the two servers, so background load hits both alike. PostgreSQL comes
from PG_TEST_URL, or is started with .ci/postgres.sh in a temporary folder.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import secrets
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from http.client import HTTPConnection
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
log = logging.getLogger("bench.share")


def serve(url: str, port: int) -> None:
    import uvicorn
    from fastapi import FastAPI

    from app.shares.store import Store
    from app.web.share_routes import mount_share_routes

    app = FastAPI()
    mount_share_routes(app, Store(url, writes_per_window=10**9))
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    def __init__(self, name: str, url: str):
        self.name, self.port = name, free_port()
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        self.proc = subprocess.Popen(
            [sys.executable, __file__, "--serve", url, str(self.port)], cwd=ROOT, env=env
        )
        deadline = time.monotonic() + 30
        while True:
            try:
                status, _ = request(HTTPConnection("127.0.0.1", self.port), "GET", "/s/none")
                if status == 404:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise RuntimeError(f"{name} server did not start")
            time.sleep(0.1)

    def conn(self) -> HTTPConnection:
        return HTTPConnection("127.0.0.1", self.port, timeout=60)

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


def request(conn: HTTPConnection, method: str, path: str, body: dict | None = None):
    data = json.dumps(body).encode() if body is not None else None
    headers = {"Content-Type": "application/json"} if data else {}
    conn.request(method, path, body=data, headers=headers)
    resp = conn.getresponse()
    return resp.status, resp.read()


def payload(i: int) -> dict:
    # A realistic share: ~1.5 KB of Python, a few parameters, a model id.
    code = "".join(f"def f_{i}_{k}(x):\n    return x * {k} + {i}  # step {k}\n" for k in range(30))
    return {
        "mode": "completion",
        "prompt": code[:200],
        "output": code,
        "model": "bigcode/tiny_starcoder_py",
        "parameters": {"temperature": 0.2, "top_p": 0.9, "max_new_tokens": 256, "seed": i},
    }


def timed(conn, method, path, body=None, expect=(200, 201)):
    t = time.perf_counter()
    status, data = request(conn, method, path, body)
    ms = (time.perf_counter() - t) * 1000
    if status not in expect:
        raise RuntimeError(f"{method} {path}: HTTP {status} {data[:200]!r}")
    return ms, data


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, round(q / 100 * (len(xs) - 1)))]


def sequential(servers: list[Server], n: int, offset: int) -> dict:
    """One keep-alive client per server; creates then reads, alternating between servers."""
    conns = {s.name: s.conn() for s in servers}
    res = {s.name: {"create": [], "read": [], "read again": [], "ids": []} for s in servers}
    for i in range(n):
        for s in servers:
            ms, data = timed(conns[s.name], "POST", "/api/shares", payload(offset + i))
            res[s.name]["create"].append(ms)
            res[s.name]["ids"].append(json.loads(data)["id"])
    for i in range(n):
        for s in servers:
            ms, _ = timed(conns[s.name], "GET", f"/s/{res[s.name]['ids'][i]}")
            res[s.name]["read"].append(ms)
    for i in range(n):  # the same pages again: served from the rendered-page cache
        for s in servers:
            ms, _ = timed(conns[s.name], "GET", f"/s/{res[s.name]['ids'][i]}")
            res[s.name]["read again"].append(ms)
    return res


def concurrent(server: Server, threads: int, per_thread: int, offset: int) -> dict:
    lat: dict[str, list[float]] = {"create": [], "read": []}
    lock = threading.Lock()

    def work(t: int) -> None:
        conn = server.conn()
        for j in range(per_thread):
            ms, data = timed(conn, "POST", "/api/shares", payload(offset + t * per_thread + j))
            ms2, _ = timed(conn, "GET", f"/s/{json.loads(data)['id']}")
            with lock:
                lat["create"].append(ms)
                lat["read"].append(ms2)

    start = time.perf_counter()
    pool = [threading.Thread(target=work, args=(t,)) for t in range(threads)]
    for th in pool:
        th.start()
    for th in pool:
        th.join()
    lat["wall_s"] = time.perf_counter() - start
    return lat


def start_postgres(tmp: str) -> tuple[str, str | None]:
    url = os.environ.get("PG_TEST_URL")
    if url:
        return url, None
    os.chmod(tmp, 0o755)  # initdb runs as the postgres user, which must reach the folder
    pg_dir = os.path.join(tmp, "pg")
    out = subprocess.run(
        [str(ROOT / ".ci" / "postgres.sh"), "start", pg_dir],
        capture_output=True,
        text=True,
    )
    if out.returncode:
        raise RuntimeError(f".ci/postgres.sh start failed: {out.stderr.strip()[-500:]}")
    return out.stdout.strip().splitlines()[-1], pg_dir


def pg_schema(base: str, schema: str, create: bool) -> str:
    import sqlalchemy as sa

    engine = sa.create_engine(base, poolclass=sa.pool.NullPool)
    with engine.begin() as conn:
        conn.exec_driver_sql(
            f"CREATE SCHEMA {schema}" if create else f"DROP SCHEMA IF EXISTS {schema} CASCADE"
        )
        version = conn.exec_driver_sql("SHOW server_version").scalar()
    engine.dispose()
    sep = "&" if "?" in base else "?"
    return f"{base}{sep}options=-csearch_path%3D{schema}", version


def machine() -> str:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return (
        f"{os.cpu_count()} cores ({cpu}), no GPU, Python {platform.python_version()}, "
        f"SQLite {sqlite3.sqlite_version}"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=300, help="sequential creates and reads per database")
    ap.add_argument("--threads", type=int, default=8, help="client threads in the concurrent run")
    ap.add_argument("--per-thread", type=int, default=25, help="create+read pairs per thread")
    ap.add_argument("--out", help="also write the markdown table to this file")
    ap.add_argument("--serve", nargs=2, metavar=("URL", "PORT"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.serve:
        serve(args.serve[0], int(args.serve[1]))
        return
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    with tempfile.TemporaryDirectory() as tmp:
        pg_base, pg_dir = start_postgres(tmp)
        schema = f"bench_{secrets.token_hex(4)}"
        pg_url, pg_version = pg_schema(pg_base, schema, create=True)
        servers = []
        try:
            servers = [
                Server("SQLite", f"sqlite:///{tmp}/playground.db"),
                Server("PostgreSQL", pg_url),
            ]
            for s in servers:  # warm up connections, caches and the lexer
                sequential([s], 10, offset=10**6)
            t0 = time.perf_counter()
            seq = sequential(servers, args.n, offset=0)
            conc = {
                s.name: concurrent(s, args.threads, args.per_thread, offset=10**5 * (k + 1))
                for k, s in enumerate(servers)
            }
            elapsed = time.perf_counter() - t0
        finally:
            for s in servers:
                s.stop()
            pg_schema(pg_base, schema, create=False)
            if pg_dir:
                subprocess.run([str(ROOT / ".ci" / "postgres.sh"), "stop", pg_dir], check=False)

    lines = [
        f"Machine: {machine()}, PostgreSQL {pg_version} on loopback (fsync=on).",
        "SQLite: WAL, synchronous=FULL. One uvicorn process per database; client in another.",
        f"Sequential: {args.n} creates, then {args.n} first reads, then the same reads again, "
        "per database, one keep-alive "
        f"connection, alternating between the databases. Concurrent: {args.threads} threads x "
        f"{args.per_thread} create+read pairs. Times in ms. Run took {elapsed:.0f} s.",
        "",
        "| database | run | op | p50 | p99 | max | req/s |",
        "|---|---|---|---:|---:|---:|---:|",
    ]
    for s in servers:
        for op in ("create", "read", "read again"):
            xs = seq[s.name][op]
            rate = 1000 / statistics.mean(xs)
            lines.append(
                f"| {s.name} | sequential | {op} | {pct(xs, 50):.2f} | {pct(xs, 99):.2f} "
                f"| {max(xs):.2f} | {rate:.0f} |"
            )
        c = conc[s.name]
        for op in ("create", "read"):
            xs = c[op]
            lines.append(
                f"| {s.name} | {args.threads} threads | {op} | {pct(xs, 50):.2f} "
                f"| {pct(xs, 99):.2f} | {max(xs):.2f} | |"
            )
        total = args.threads * args.per_thread * 2
        lines.append(
            f"| {s.name} | {args.threads} threads | all | | | | {total / c['wall_s']:.0f} |"
        )
    table = "\n".join(lines)
    sys.stdout.write(table + "\n")
    if args.out:
        Path(args.out).write_text(table + "\n")


if __name__ == "__main__":
    main()
