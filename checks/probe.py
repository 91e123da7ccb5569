"""Hostile black-box probe of a running playground: every route, garbage in, nothing bad out.

    python -m checks.probe --url http://127.0.0.1:7860/ --data-dir data [--json FILE]

Sends only to the loopback URL it is given. Every case is one request (or one queue round trip)
with hostile input; each is bounded in time and bytes. A case FAILS when:

- `5xx`: any response status >= 500 (or the server stops answering);
- `trace`: the body shows internal error text: a Python traceback ("Traceback (most recent call
  last)", `File "...", line N`), "Internal Server Error", the app's "Something went wrong on our
  side", or a raw exception message that Gradio passed through (an error payload that is not a
  `gr.Error`: it has no `title`);
- `file`: a file or folder named with this run's random marker exists outside the data folder
  (session hashes and upload names carry the marker; /tmp, the data folder's parents and the
  paths a traversal would resolve to are checked);
- `inject`: `<script>probe</script>` (or the `<img onerror>` marker) appears unescaped in an
  HTML response or in an HTML component's output.

Expected refusals also record whether the message is precise (names the field); "concerns"
(a hostile value accepted, a Host-header link, a slow refusal of a huge body, no result in time,
...) are reported beside the failures but do not fail a case. Anything the probe made the server
leave outside the data folder is deleted afterwards (only names with this run's marker).

`run_probe` returns a `ProbeReport`; the CLI prints its summary table (the one in
bench/RESULTS.md), the table per route, every failing case with its status and the first 200
characters of the body, the concerns and the imprecise refusals, and exits 1 on failures.
`--groups` runs some of the case groups (see GROUPS); `--json FILE` keeps every case.

The rules and the report live in probe_checks.py, the client that sends and records a case in
probe_client.py, and the cases in probe_share_cases.py (shares), probe_v1_cases.py (the
OpenAI-compatible routes) and probe_cases.py (the rest).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import sys
import threading
import time
from pathlib import Path

import httpx

from checks.probe_abuse_cases import abuse_cases
from checks.probe_cases import (
    attribute_search_cases,
    generation_cases,
    heavy_cases,
    ops_cases,
    ui_cases,
)
from checks.probe_checks import ProbeReport, named
from checks.probe_client import Probe
from checks.probe_share_cases import (
    page_cases,
    share_api_cases,
    share_page_cases,
    shares_cases,
)
from checks.probe_v1_cases import v1_cases

GROUPS = ("shares", "share_pages", "pages", "ui", "generation", "v1", "share_api",
          "attribute_search", "ops", "abuse", "heavy")  # fmt: skip


def run_probe(
    base_url: str, data_dir: str, max_seconds: float = 240.0, groups: tuple[str, ...] = GROUPS
) -> ProbeReport:
    """Run every case against the app at `base_url` (loopback only) whose data folder is
    `data_dir`; returns the report (see the module docstring for what fails a case)."""
    start = time.monotonic()
    p = Probe(base_url, data_dir, max_seconds=max_seconds)
    sampling = threading.Event()
    sampler = threading.Thread(target=_sample_health, args=(p, sampling), daemon=True)
    sampler.start()
    try:
        p.discover()
        made = shares_cases(p) if "shares" in groups else {}
        steps = {"share_pages": lambda: share_page_cases(p, made),
                 "pages": lambda: page_cases(p, made), "ui": lambda: ui_cases(p),
                 "generation": lambda: generation_cases(p), "v1": lambda: v1_cases(p),
                 "share_api": lambda: share_api_cases(p),
                 "attribute_search": lambda: attribute_search_cases(p),
                 "ops": lambda: ops_cases(p), "abuse": lambda: abuse_cases(p),
                 "heavy": lambda: heavy_cases(p)}  # fmt: skip
        for name, step in steps.items():
            if name in groups:
                step()
        leaked = p.files.quick(p.marker) + p.files.deep(p.marker)
        if leaked:
            p.report.outside_files = sorted(set(p.report.outside_files) | set(leaked))
            _blame(p.report, leaked)
        _remove(p.report.outside_files, p.marker)
        try:
            alive = p.http.get("config", timeout=10).status_code == 200
        except httpx.HTTPError:
            alive = False
        p.report.server_alive = alive
    finally:
        sampling.set()
        sampler.join(10)
        p.http.close()
    p.report.cases = [
        c
        for c in p.report.cases
        if c.status is not None or c.event or c.body or c.failures or c.concerns
    ]
    p.report.wall_s = time.monotonic() - start
    return p.report


def _sample_health(p: Probe, done: threading.Event, every_s: float = 0.2) -> None:
    """/healthz latency all through the run, from a client of its own: a load balancer's view
    of a server under abuse."""
    with httpx.Client(base_url=p.base, timeout=10) as http:
        while not done.wait(every_s):
            start = time.perf_counter()
            with contextlib.suppress(httpx.HTTPError):
                http.get("healthz")
            p.report.healthz_ms.append((time.perf_counter() - start) * 1000)


def _remove(paths: list[str], marker: str) -> None:
    """Delete what the probe made the server leave behind (only names with this run's marker)."""
    for path in paths:
        if f"{marker}-" not in os.path.basename(path):
            continue
        with contextlib.suppress(OSError):
            if os.path.isdir(path) and not os.path.islink(path):
                shutil.rmtree(path)
            else:
                os.remove(path)


def _blame(report: ProbeReport, leaked: list[str]) -> None:
    """A leaked path is named with a case's marker; mark that case failed (once)."""
    for case in report.cases:
        if "file" in case.kinds():
            continue
        # "-1" must not blame on "-12": a marker ends at a non-digit
        hits = [path for path in leaked if case.marker and named(case.marker, path)]
        if hits:
            case.failures.append(f"file: {hits[0]}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--url", default="http://127.0.0.1:7860/", help="the app (loopback only)")
    ap.add_argument("--data-dir", default="data", help="the app's --data-dir")
    ap.add_argument("--max-seconds", type=float, default=240.0, help="stop starting new cases")
    ap.add_argument("--json", help="also write the full report here")
    ap.add_argument("--groups", default=",".join(GROUPS), help="case groups to run")
    args = ap.parse_args(argv)
    groups = tuple(g.strip() for g in args.groups.split(",") if g.strip())
    report = run_probe(args.url, args.data_dir, max_seconds=args.max_seconds, groups=groups)
    print(report.summary_table())
    print()
    print(report.route_table())
    print("\nFailing cases:")
    print(report.failing_text())
    print("\nConcerns (not failures):")
    print(report.concerns_text())
    print("\nRefusals that do not name the field:")
    print(report.imprecise_text())
    if args.json:
        Path(args.json).write_text(json.dumps(report.to_dict(), indent=1, default=str))
    return 1 if report.failing or not report.server_alive else 0


if __name__ == "__main__":
    sys.exit(main())
