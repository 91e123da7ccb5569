"""Reliability battery: many simulated users on the real app, each text checked against greedy.

    python -m checks.users [--users 50] [--seconds 120] [--rate-limit 0] [--hang-after 180]
                          [--slow-after 60] [--json FILE] [--log-file FILE]

The real app runs in this process as the tests start it (tests/conftest.py `_serve`: worker
processes, Gradio, routes, uvicorn on a free loopback port) with its natural default models
(no `--model`: SmolLM2 for completion and the assistant, tiny-starcoder for FIM), `--device cpu`,
a temporary data folder (so SmolLM2 is converted and the attribution index built there, once,
before anything is timed), and the app's defaults otherwise, except `--rate-limit` (default 0,
no limit, so the load reaches the queue and the batching; pass 30 for the app's own default:
every simulated user shares 127.0.0.1, so most requests then get "Too many generations").

0. Preflight: the plain-HTTP API as Gradio documents it, without a `session_hash`
   (`/call/<api>` and `/call/v2/<api>`), must work (it was refused with 400 before 35fa55c).
1. Reference: every (mode, prompt, max_new_tokens) combination once, one at a time, greedy
   (temperature 0, repetition_penalty 1.0).
2. Soak: `--users` users, each with its own HTTP client (own connections and cookies) and its
   own Gradio `session_hash`, loop for
   `--seconds` over /complete, /fill and /assist (and sometimes /share of what they got, then
   GET of the link, and /search), through Gradio's named API over plain HTTP + SSE:
   `POST /gradio_api/call/<api>` with all positional values, then `GET .../<event_id>`.
   Every successful generation must equal its reference exactly and be complete (completion:
   starts with the prompt; FIM: starts with the prefix and ends with the suffix).
3. After: `GET /healthz` is 200 and one more request of each mode succeeds.

Outcomes: ok, refused (a clear "busy" or "Too many ..." message), error (anything else),
mismatch (ok but not the reference text), incomplete, hang (no final event within
`--hang-after` seconds; the request is then abandoned, which cancels it on the server). A
finished request that took more than `--slow-after` seconds is counted as slow, not as a
failure: 50 users on a 2-core CPU keep SmolLM2's queue full, and a request that streams all
along but finishes after a minute is queueing, not hanging (the first-token column tells them
apart).
Exit status 1 if any error, mismatch, incomplete text or hang occurred (or a post-check failed).

Everything is bounded: every HTTP call has a timeout, users stop starting requests at the
deadline, and traffic goes to 127.0.0.1 only.

Here: the app and the battery's phases. The workload is checks/users_workload.py, one call
checks/users_client.py, a user's loop checks/users_soak.py and the report checks/users_report.py.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from checks.users_client import Api, call_retrying, new_session  # noqa: E402 - path set above
from checks.users_report import summarize  # noqa: E402
from checks.users_soak import soak  # noqa: E402
from checks.users_workload import (  # noqa: E402
    API,
    COMPLETION_PROMPTS,
    MAX_NEW_TOKENS,
    PROMPTS,
    combos,
    completeness,
    request_args,
)

log = logging.getLogger("checks.users")


async def references(base: str, params, hang_after: float) -> tuple[dict, list[str]]:
    import httpx

    refs: dict[tuple, str] = {}
    problems: list[str] = []
    async with httpx.AsyncClient(base_url=base, timeout=hang_after) as c:
        api = Api(c, params, hang_after, session=new_session("reference"))
        for key in combos():
            mode, prompt, max_new = key
            start = time.perf_counter()
            outcome, value, _, _ = await call_retrying(api, API[mode], request_args(*key))
            took = time.perf_counter() - start
            if outcome != "ok":
                problems.append(f"reference {key!r}: {outcome}: {value}")
                continue
            why = completeness(mode, prompt, value)
            if why:
                problems.append(f"reference {key!r} incomplete: {why}: {value!r}")
            refs[key] = value
            log.info("reference %-10s %2d tokens %5.1f s %r", mode, max_new, took, value[-40:])
    return refs, problems


async def after(base: str, params, refs, hang_after: float) -> list[str]:
    """Problems after the soak: /healthz and one more request of each mode."""
    import httpx

    problems = []
    async with httpx.AsyncClient(base_url=base, timeout=30) as c:
        h = await c.get("healthz")
        if h.status_code != 200:
            problems.append(f"/healthz {h.status_code}: {h.text[:200]}")
        api = Api(c, params, hang_after, session=new_session("after"))
        for mode in API:
            key = (mode, PROMPTS[mode][0], MAX_NEW_TOKENS[0])
            outcome, value, _, _ = await call_retrying(api, API[mode], request_args(*key))
            if outcome != "ok":
                problems.append(f"after the soak, /{API[mode]}: {outcome}: {value}")
            elif value != refs.get(key):
                problems.append(f"after the soak, /{API[mode]}: {value!r} != {refs.get(key)!r}")
    return problems


async def session_less_calls(base: str, params, hang_after: float) -> list[str]:
    """Problems of the plain-HTTP API as Gradio documents it: no session_hash in the body, both
    `POST /gradio_api/call/<api>` ({"data": [...]}) and `/call/v2/<api>` (named arguments)."""
    import httpx

    problems = []
    key = ("completion", COMPLETION_PROMPTS[0], MAX_NEW_TOKENS[0])
    async with httpx.AsyncClient(base_url=base, timeout=hang_after) as c:
        api = Api(c, params, hang_after, session="")
        bodies = {
            "gradio_api/call/complete": {"data": api.data("complete", request_args(*key))},
            "gradio_api/call/v2/complete": request_args(*key),
        }
        for route, body in bodies.items():
            r = await c.post(route, json=body)
            if r.status_code != 200:
                problems.append(
                    f"POST /{route} {json.dumps(body)} (no session_hash): "
                    f"{r.status_code} {r.text[:300]}"
                )
                continue
            text = (await c.get(f"{route}/{r.json()['event_id']}")).text
            if "event: complete" not in text:
                problems.append(f"POST /{route} (no session_hash): stream {text[-300:]!r}")
    return problems


async def metric(base: str, name: str) -> float:
    import httpx

    async with httpx.AsyncClient(base_url=base, timeout=30) as c:
        for line in (await c.get("metrics")).text.splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
    return 0.0


def app_argv(args, data: str) -> list[str]:
    argv = ["--data-dir", data, "--port", "0", "--device", "cpu",
            "--rate-limit", str(args.rate_limit),
            "--token-budget", "0" if args.rate_limit == 0 else "20000"]  # fmt: skip
    if args.share_rate is not None:
        argv += ["--share-rate", str(args.share_rate)]
    return argv


def run(args) -> int:
    import httpx

    from app.server import BackgroundServer, build_app, build_engines, open_attribution
    from app.settings import Settings

    data = tempfile.mkdtemp(prefix="bench-users-")
    argv = app_argv(args, data)
    settings = Settings.load(argv, env={})
    engines = build_engines(settings)
    registry = engines.registry
    models = {m: registry.default_for(m) for m in API}
    log.info("data dir %s; default models %s; argv %s", data, models, argv)
    try:
        t0 = time.perf_counter()
        warm = engines.warm(list(dict.fromkeys(models.values())))
        attribution = open_attribution(settings)
        built = build_app(Settings.load(argv, env={}), engines, attribution)
        warm.join(600)
        with BackgroundServer(built.fastapi) as server:
            base = server.url
            assert base.startswith("http://127.0.0.1:"), base
            # The engines load in the background; /healthz is 200 once they can generate.
            deadline = time.monotonic() + 600
            while httpx.get(f"{base}healthz", timeout=30).status_code != 200:
                if time.monotonic() > deadline:
                    raise RuntimeError("the app did not become healthy in 10 minutes")
                time.sleep(1)
            log.info("app ready at %s in %.0f s", base, time.perf_counter() - t0)
            info = httpx.get(f"{base}gradio_api/info", timeout=30).json()["named_endpoints"]
            params = {api.strip("/"): e["parameters"] for api, e in info.items()}
            return asyncio.run(battery(args, base, params, models))
    finally:
        engines.close()


async def battery(args, base, params, models) -> int:
    preflight = await session_less_calls(base, params, args.hang_after)
    for problem in preflight:
        log.warning("%s", problem)
    t = time.perf_counter()
    refs, ref_problems = await references(base, params, args.hang_after)
    ref_s = time.perf_counter() - t
    log.info("references: %d of %d in %.0f s", len(refs), len(combos()), ref_s)
    tokens0 = await metric(base, "playground_generated_tokens_total")
    t = time.perf_counter()
    log.info("soak: %d users for %.0f s", args.users, args.seconds)
    stats = await soak(base, params, refs, args.users, args.seconds, args.hang_after)
    wall = time.perf_counter() - t
    tokens = await metric(base, "playground_generated_tokens_total") - tokens0
    post = await after(base, params, refs, args.hang_after)
    report = summarize(
        args, stats, wall, tokens, refs, preflight + ref_problems + post, models, ref_s
    )
    print(report["table"])
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1, default=str), encoding="utf-8")
    failed = (
        report["totals"]["error"]
        + report["totals"]["mismatch"]
        + report["totals"]["incomplete"]
        + report["totals"]["hang"]
        + len(report["problems"])
    )
    return 1 if failed else 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m checks.users", description=__doc__.split("\n")[0])
    p.add_argument("--users", type=int, default=50)
    p.add_argument("--seconds", type=float, default=120.0, help="soak length")
    p.add_argument(
        "--rate-limit",
        type=int,
        default=0,
        help="the app's --rate-limit (generations per client per minute; 0: none; "
        "the app's own default is 30)",
    )
    p.add_argument(
        "--share-rate",
        type=int,
        default=None,
        help="the app's --share-rate (default: the app's, 30)",
    )
    p.add_argument(
        "--hang-after",
        type=float,
        default=180.0,
        help="a request with no final event after this many seconds is a hang (and abandoned)",
    )
    p.add_argument(
        "--slow-after",
        type=float,
        default=60.0,
        help="finished requests that took longer than this are counted as slow (not a failure)",
    )
    p.add_argument("--json", default=None, help="also write the full report here")
    p.add_argument("--log-file", default=None, help="the server's log (default: a temp file)")
    args = p.parse_args(argv)
    logfile = args.log_file or tempfile.mktemp(prefix="bench-users-", suffix=".log")
    logging.basicConfig(
        level="INFO",
        filename=logfile,
        filemode="w",
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    console = logging.StreamHandler()
    console.setLevel(logging.INFO)
    console.addFilter(lambda r: r.name == "checks.users" or r.levelno >= logging.WARNING)
    console.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.getLogger().addHandler(console)
    for noisy in ("httpx", "httpcore"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    log.info("server log: %s", logfile)
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
