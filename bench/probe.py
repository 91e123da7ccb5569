"""Hostile black-box probe of a running playground: every route, garbage in, nothing bad out.

    python -m bench.probe --url http://127.0.0.1:7860/ --data-dir data [--json FILE]

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
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import secrets
import select
import shutil
import socket
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode, urlsplit

import httpx

INJECT = "<script>probe</script>"
INJECT_ATTR = '"><img src=x onerror=probe()>'
INJECT_NEEDLES = ("<script>probe</script>", "<img src=x onerror=probe()>")
TRACE_PATTERNS = (
    re.compile(r"Traceback \(most recent call last\)"),
    re.compile(r'File \\?"[^"\n]{1,400}?\\?", line \d+'),
    re.compile(r"Internal Server Error"),
    re.compile(r"Something went wrong on our side"),
)
FAIL_KINDS = ("5xx", "trace", "file", "inject")
RATE_LIMITED = re.compile(r"too many .{0,40}limit is|try again in \d+ ?s|rate.?limit", re.I)
GENERATE_TOKENS = 4  # every generation the probe may cause is this short
MAX_BODY_KEEP = 64 * 1024  # bytes of each response kept for the checks
HUGE_BODY = 20 * 2**20
UPLOAD_BYTES = 8 * 2**20


@dataclass
class Case:
    route: str
    name: str
    status: int | None = None  # HTTP status (for queue calls: of the join/call POST)
    event: str | None = None  # queue calls: complete / error / timeout
    body: str = ""
    elapsed_s: float = 0.0
    expect_refusal: bool = False
    field_name: str | None = None  # the field a precise refusal names ("a|b": either)
    allow_503: bool = False  # /healthz answers 503 by design until a model can generate
    quotes_corpus: bool = False  # a search result may quote a traceback from the training data
    precise: str = "-"  # yes / no / accepted / rate-limited / -
    failures: list[str] = field(default_factory=list)  # "kind: why"
    concerns: list[str] = field(default_factory=list)
    marker: str | None = None  # the file-name marker this case sent, if any

    @property
    def failed(self) -> bool:
        return bool(self.failures)

    def kinds(self) -> set[str]:
        return {f.split(":", 1)[0] for f in self.failures}

    def status_text(self) -> str:
        s = "-" if self.status is None else str(self.status)
        return f"{s}/{self.event}" if self.event else s


@dataclass
class ProbeReport:
    base_url: str
    data_dir: str
    marker: str
    cases: list[Case] = field(default_factory=list)
    outside_files: list[str] = field(default_factory=list)
    wall_s: float = 0.0
    server_alive: bool = True

    def count(self, kind: str) -> int:
        return sum(1 for c in self.cases if kind in c.kinds())

    @property
    def cases_tried(self) -> int:
        return len(self.cases)

    @property
    def server_errors(self) -> int:
        return self.count("5xx")

    @property
    def traces(self) -> int:
        return self.count("trace")

    @property
    def injections(self) -> int:
        return self.count("inject")

    @property
    def files_outside(self) -> int:
        return len(self.outside_files)

    @property
    def failing(self) -> list[Case]:
        return [c for c in self.cases if c.failed]

    def routes(self) -> dict[str, dict[str, int]]:
        out: dict[str, dict[str, int]] = {}
        for c in self.cases:
            r = out.setdefault(c.route, {"cases": 0, **dict.fromkeys(FAIL_KINDS, 0), "failed": 0,
                                         "refusals": 0, "precise": 0, "concerns": 0})  # fmt: skip
            r["cases"] += 1
            for k in c.kinds():
                r[k] += 1
            r["failed"] += c.failed
            if c.expect_refusal and c.field_name:
                r["refusals"] += 1
                r["precise"] += c.precise == "yes"
            r["concerns"] += bool(c.concerns)
        return out

    def summary_table(self) -> str:
        refusals = [c for c in self.cases if c.expect_refusal and c.field_name]
        rows = [
            ("cases tried", self.cases_tried),
            ("routes", len(self.routes())),
            ("responses with status >= 500", self.server_errors),
            ("responses with a traceback or internal error text", self.traces),
            ("files written outside the data folder", self.files_outside),
            ("unescaped injected markup", self.injections),
            ("failing cases", len(self.failing)),
            ("expected refusals: precise (name the field)",
             f"{sum(c.precise == 'yes' for c in refusals)}/{len(refusals)}"),
            ("expected refusals: accepted instead",
             sum(c.precise == "accepted" for c in self.cases)),
            ("cases with concerns (not failures)", sum(bool(c.concerns) for c in self.cases)),
            ("server answering after the probe", "yes" if self.server_alive else "NO"),
            ("wall time", f"{self.wall_s:.1f} s"),
        ]  # fmt: skip
        lines = ["| check | result |", "|---|---|"]
        lines += [f"| {k} | {v} |" for k, v in rows]
        return "\n".join(lines)

    def route_table(self) -> str:
        lines = [
            "| route | cases | 5xx | traces | files outside | injections | failed "
            "| precise refusals | concerns |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for route, r in self.routes().items():
            lines.append(
                f"| `{route}` | {r['cases']} | {r['5xx']} | {r['trace']} | {r['file']} "
                f"| {r['inject']} | {r['failed']} | {r['precise']}/{r['refusals']} "
                f"| {r['concerns']} |"
            )
        return "\n".join(lines)

    def failing_text(self) -> str:
        lines = []
        for c in self.failing:
            lines.append(f"- [{c.route}] {c.name}: status {c.status_text()} "
                         f"({'; '.join(c.failures)})\n    {_short(c.body)}")  # fmt: skip
        if self.outside_files:
            lines.append("files outside the data folder:")
            lines += [f"    {p}" for p in self.outside_files]
        return "\n".join(lines) or "(none)"

    def concerns_text(self) -> str:
        lines = []
        for c in self.cases:
            for why in c.concerns:
                lines.append(f"- [{c.route}] {c.name}: status {c.status_text()}: {why}")
        return "\n".join(lines) or "(none)"

    def imprecise_text(self) -> str:
        lines = [f"- [{c.route}] {c.name} ({c.field_name}): status {c.status_text()}: {_short(c.body, 160)}"
                 for c in self.cases if c.expect_refusal and c.precise == "no"]  # fmt: skip
        return "\n".join(lines) or "(none)"

    def to_dict(self) -> dict:
        return {
            "base_url": self.base_url, "data_dir": self.data_dir, "wall_s": self.wall_s,
            "cases_tried": self.cases_tried, "server_errors": self.server_errors,
            "traces": self.traces, "files_outside": self.files_outside,
            "injections": self.injections, "server_alive": self.server_alive,
            "outside_files": self.outside_files, "routes": self.routes(),
            "cases": [{**asdict(c), "body": c.body[:2000]} for c in self.cases],
        }  # fmt: skip


def _short(text: str, n: int = 200) -> str:
    return text[:n].replace("\n", "\\n")


# -- checks ------------------------------------------------------------------------------------


def trace_text(body: str) -> str | None:
    for pattern in TRACE_PATTERNS:
        m = pattern.search(body)
        if m:
            return m.group(0)[:80]
    return None


def injected(html: str) -> str | None:
    low = html.lower()
    return next((n for n in INJECT_NEEDLES if n.lower() in low), None)


def _named(marker: str, name: str) -> bool:
    """`name` carries `marker` (and not merely a longer one: "-1" is not "-12")."""
    return re.search(re.escape(marker) + r"(?!\d)", name) is not None


def _is_inside(path: str, root: str) -> bool:
    try:
        real, base = os.path.realpath(path), os.path.realpath(root)
    except (ValueError, OSError):
        return False
    return real == base or real.startswith(base.rstrip(os.sep) + os.sep)


class FileWatch:
    """Finds files and folders named with a marker outside the data folder (bounded walks)."""

    def __init__(self, data_dir: str, max_entries: int = 200_000, max_seconds: float = 8.0):
        self.data_dir = os.path.realpath(data_dir)
        self.max_entries, self.max_seconds = max_entries, max_seconds

    def shallow_roots(self) -> list[str]:
        roots, p = [], Path(self.data_dir)
        for parent in [p, *p.parents]:
            roots.append(str(parent))
        roots += [os.getcwd(), tempfile.gettempdir(), "/tmp"]
        return list(dict.fromkeys(roots))

    def deep_roots(self) -> list[str]:
        """Gradio's cache first (uploads and downloads land there), then the temp folders."""
        tmp = tempfile.gettempdir()
        roots = [os.environ.get("GRADIO_TEMP_DIR") or "", os.path.join(tmp, "gradio"), tmp, "/tmp"]
        return list(dict.fromkeys(r for r in roots if r and os.path.isdir(r)))

    def candidates(self, name: str) -> list[str]:
        """Where a path built from `name` would land (absolute names and ../ resolved)."""
        bases = [self.data_dir, os.path.join(self.data_dir, "downloads"), os.getcwd()]
        out = []
        for base in bases:
            with contextlib.suppress(ValueError, TypeError):
                out.append(os.path.normpath(os.path.join(base, name)))
        return out

    def quick(self, marker: str, names: tuple[str, ...] = ()) -> list[str]:
        found = []
        # Only paths named with the marker: ".." resolves to folders that existed before.
        for path in [c for n in names for c in self.candidates(n) if _named(marker, c)]:
            try:
                if (
                    "\x00" not in path
                    and os.path.lexists(path)
                    and not _is_inside(path, self.data_dir)
                ):
                    found.append(path)
            except (ValueError, OSError):
                pass
        for root in self.shallow_roots():
            try:
                for entry in os.listdir(root):
                    full = os.path.join(root, entry)
                    if _named(marker, entry) and not _is_inside(full, self.data_dir):
                        found.append(full)
            except OSError:
                pass
        return sorted(set(found))

    def deep(self, marker: str) -> list[str]:
        found, seen, deadline = [], 0, time.monotonic() + self.max_seconds
        for root in self.deep_roots():
            for dirpath, dirnames, filenames in os.walk(root):
                if _is_inside(dirpath, self.data_dir):
                    dirnames[:] = []
                    continue
                for name in dirnames + filenames:
                    seen += 1
                    if marker in name:
                        found.append(os.path.join(dirpath, name))
                if seen > self.max_entries or time.monotonic() > deadline:
                    return sorted(set(found))
        return sorted(set(found))


# -- the probe ---------------------------------------------------------------------------------


class Probe:
    def __init__(self, base_url: str, data_dir: str, max_seconds: float = 240.0):
        parts = urlsplit(base_url)
        if parts.hostname not in ("127.0.0.1", "localhost", "::1"):
            raise ValueError(f"the probe only talks to loopback; given {base_url!r}")
        self.base = base_url.rstrip("/") + "/"
        self.host, self.port = parts.hostname, parts.port or 80
        self.prefix = parts.path.rstrip("/")  # a root path, if the app is mounted under one
        self.data_dir = str(Path(data_dir).resolve())
        self.run_id = secrets.token_hex(4)
        self.marker = f"probe-{self.run_id}"
        self.deadline = time.monotonic() + max_seconds
        # A new connection for every request: one case's broken connection never fails the next.
        self.http = httpx.Client(
            base_url=self.base, timeout=httpx.Timeout(15.0, connect=5.0), follow_redirects=False,
            limits=httpx.Limits(max_keepalive_connections=0),
        )  # fmt: skip
        self.files = FileWatch(self.data_dir)
        self.report = ProbeReport(self.base, self.data_dir, self.marker)
        self.config: dict = {}
        self.api_params: dict[str, list[dict]] = {}
        self.n = 0

    # -- recording ------------------------------------------------------------------------

    def left(self) -> float:
        return self.deadline - time.monotonic()

    def new_marker(self) -> str:
        self.n += 1
        return f"{self.marker}-{self.n}"

    def record(self, case: Case, *, html: list[str] = (), check_html_body: bool = False,
               headers: httpx.Headers | None = None) -> Case:  # fmt: skip
        server_error = case.status is not None and case.status >= 500
        if server_error and not (case.allow_503 and case.status == 503):
            case.failures.append(f"5xx: status {case.status}")
        quoted = case.quotes_corpus and case.event == "complete"
        if not quoted and (t := trace_text(case.body)) is not None:
            case.failures.append(f"trace: {t!r}")
        ctype = headers.get("content-type", "") if headers is not None else ""
        htmls = list(html)
        if check_html_body or "text/html" in ctype:
            htmls.append(case.body)
        for h in htmls:
            if isinstance(h, str) and (m := injected(h)):
                case.failures.append(f"inject: {m!r} unescaped")
                break
        if case.event == "timeout":
            case.concerns.append(f"no result within the case's limit ({case.elapsed_s:.0f} s)")
        if case.expect_refusal:
            case.precise = self._precision(case)
        self.report.cases.append(case)
        return case

    def _precision(self, case: Case) -> str:
        refused = (case.status is not None and case.status >= 400) or case.event in ("error",)
        body = case.body.lower()
        if case.status == 429 or RATE_LIMITED.search(body):
            return "rate-limited"
        if not refused:
            if case.event == "timeout" or case.status is None:
                return "-"
            case.concerns.append("hostile input accepted (expected a refusal)")
            return "accepted"
        if not case.field_name:
            return "-"
        return "yes" if any(f.lower() in body for f in case.field_name.split("|")) else "no"

    # -- plain HTTP -----------------------------------------------------------------------

    def request(self, route: str, name: str, method: str, url: str, *, target: str | None = None,
                expect_refusal: bool = False, field_: str | None = None, html_check: bool = False,
                stream_limit_s: float | None = None, allow_503: bool = False,
                **kwargs) -> tuple[Case, httpx.Response | None]:  # fmt: skip
        """One request; `target` sends the raw request target (no path normalisation)."""
        case = Case(route, name, expect_refusal=expect_refusal, field_name=field_,
                    allow_503=allow_503)  # fmt: skip
        if self.left() <= 0:
            return case, None
        ext = dict(kwargs.pop("extensions", {}) or {})
        if target is not None:
            ext["target"] = (self.prefix + target).encode("latin-1", "replace")
        start = time.monotonic()
        resp = None
        try:
            if stream_limit_s is not None:  # endless streams: take what comes in a short while
                timeout = httpx.Timeout(stream_limit_s, connect=5.0)
                with self.http.stream(method, url, extensions=ext, timeout=timeout, **kwargs) as r:
                    resp, chunks, size = r, [], 0
                    end = time.monotonic() + stream_limit_s
                    try:
                        for chunk in r.iter_bytes():
                            chunks.append(chunk)
                            size += len(chunk)
                            if size > MAX_BODY_KEEP or time.monotonic() > end:
                                break
                    except httpx.TimeoutException:
                        pass
                    case.body = b"".join(chunks)[:MAX_BODY_KEEP].decode("utf-8", "replace")
            else:
                resp = self.http.request(method, url, extensions=ext, **kwargs)
                case.body = resp.content[:MAX_BODY_KEEP].decode("utf-8", "replace")
            case.status = resp.status_code
        except httpx.HTTPError as exc:
            case.body = f"<no response: {type(exc).__name__}: {exc}>"
            _no_response(case, exc)
        except (httpx.InvalidURL, ValueError, UnicodeError) as exc:  # the probe could not send it
            case.body = f"<not sent: {type(exc).__name__}: {exc}>"
            case.concerns.append("the probe could not send this case")
        case.elapsed_s = time.monotonic() - start
        self.record(case, headers=resp.headers if resp is not None else None,
                    check_html_body=html_check)  # fmt: skip
        return case, resp

    def raw_huge(self, route: str, name: str, path: str, *, chunked: bool,
                 total: int = HUGE_BODY, field_: str = "body") -> Case:  # fmt: skip
        """Stream `total` bytes of JSON-ish body over a socket; stop as soon as a reply comes."""
        case = Case(route, name, expect_refusal=True, field_name=field_)
        start = time.monotonic()
        head = [f"POST {self.prefix}{path} HTTP/1.1", f"Host: {self.host}:{self.port}",
                "Content-Type: application/json", "Connection: close"]  # fmt: skip
        head.append("Transfer-Encoding: chunked" if chunked else f"Content-Length: {total}")
        sent, reply = 0, b""
        block = b'{"mode": "completion", "prompt": "' + b"a" * (64 * 1024 - 34)
        filler = b"a" * (64 * 1024)
        try:
            with socket.create_connection((self.host, self.port), timeout=5) as s:
                s.sendall(("\r\n".join(head) + "\r\n\r\n").encode())
                end = time.monotonic() + min(30.0, max(self.left(), 1.0))
                while sent < total and time.monotonic() < end:
                    readable, _, _ = select.select([s], [], [], 0)
                    if readable:
                        break
                    piece = (block if sent == 0 else filler)[: total - sent]
                    data = (b"%x\r\n" % len(piece) + piece + b"\r\n") if chunked else piece
                    try:
                        s.sendall(data)
                    except (BrokenPipeError, ConnectionResetError, TimeoutError):
                        break
                    sent += len(piece)
                if chunked and sent >= total:
                    with contextlib.suppress(OSError):
                        s.sendall(b"0\r\n\r\n")
                s.settimeout(10)
                try:
                    while len(reply) < MAX_BODY_KEEP:
                        more = s.recv(65536)
                        if not more:
                            break
                        reply += more
                except OSError:
                    pass
        except OSError as exc:
            reply = f"<no response: {exc}>".encode()
        case.elapsed_s = time.monotonic() - start
        text = reply.decode("utf-8", "replace")
        m = re.match(r"HTTP/1\.[01] (\d{3})", text)
        case.status = int(m.group(1)) if m else None
        case.body = text.split("\r\n\r\n", 1)[-1] if m else text
        if sent >= total:
            case.concerns.append(f"the server took all {total:,} bytes before answering")
        elif case.elapsed_s > 5:
            case.concerns.append(f"refusal took {case.elapsed_s:.1f} s")
        if case.status is None:
            case.concerns.append(f"no HTTP reply after {sent:,} bytes sent")
        return self.record(case)

    # -- Gradio's queue -------------------------------------------------------------------

    def _sse(self, url: str, params: dict | None, limit_s: float) -> Iterator[tuple[str, str]]:
        """(event, data) pairs of an SSE stream, until the caller stops or `limit_s` passes."""
        end = time.monotonic() + limit_s
        timeout = httpx.Timeout(max(1.0, min(limit_s, 20.0)), connect=5.0)
        with self.http.stream("GET", url, params=params, timeout=timeout) as r:
            if r.status_code != 200:
                r.read()
                yield "http", f"{r.status_code} {r.text[:MAX_BODY_KEEP]}"
                return
            event, data, size = "message", [], 0
            for line in r.iter_lines():
                size += len(line)
                if line.startswith("event:"):
                    event = line[6:].strip()
                elif line.startswith("data:"):
                    data.append(line[5:].lstrip())
                elif not line and data:
                    yield event, "\n".join(data)
                    event, data = "message", []
                if time.monotonic() > end or size > 8 * MAX_BODY_KEEP:
                    yield "timeout", ""
                    return

    def call(self, api: str, name: str, data: Any = None, *, kwargs: dict | None = None,
             expect_refusal: bool = False, field_: str | None = None, body: bytes | None = None,
             headers: dict | None = None, limit_s: float = 30.0, route: str | None = None) -> Case:  # fmt: skip
        """A named endpoint through /gradio_api/call/<api> (POST, then the SSE result)."""
        route = route or f"/gradio_api/call/{api}"
        case = Case(route, name, expect_refusal=expect_refusal, field_name=field_,
                    quotes_corpus=api in ("search", "attribute"))  # fmt: skip
        if self.left() <= 0:
            return case
        if kwargs is not None:
            data = self.positional(api, kwargs)
        if body is None:
            body = json.dumps({"data": data}).encode()  # NaN, inf and lone surrogates survive
        start = time.monotonic()
        try:
            r = self.http.post(f"gradio_api/call/{api}", content=body,
                               headers={"content-type": "application/json", **(headers or {})})  # fmt: skip
            case.status = r.status_code
            case.body = r.content[:MAX_BODY_KEEP].decode("utf-8", "replace")
            if r.status_code == 200 and "event_id" in case.body:
                event_id = r.json()["event_id"]
                case.event, case.body = "timeout", ""
                for ev, payload in self._sse(f"gradio_api/call/{api}/{event_id}", None,
                                             min(limit_s, max(self.left(), 1.0))):  # fmt: skip
                    if ev in ("complete", "error", "timeout", "http"):
                        case.event, case.body = ev, payload
                        break
                self._check_error_payload(case)
        except (httpx.HTTPError, ValueError) as exc:
            case.body += f"<no response: {type(exc).__name__}: {exc}>"
            _no_response(case, exc)
        case.elapsed_s = time.monotonic() - start
        return self.record(case)

    def _check_error_payload(self, case: Case, payload: Any = None) -> None:
        """Gradio passes a non-gr.Error exception's str() through (no `title`): internal text."""
        if payload is None and case.event == "error":
            try:
                payload = json.loads(case.body)
            except ValueError:
                return
        if isinstance(payload, dict) and "error" in payload:
            if payload.get("error") is None:
                case.concerns.append("opaque error (an unhandled exception, message hidden)")
            elif "title" not in payload:
                case.failures.append(f"trace: raw exception text {str(payload['error'])[:80]!r}")

    def join(self, route: str, name: str, fn_index: Any, data: Any, *, session_hash: Any = None,
             query: dict | None = None, html_outputs: tuple[int, ...] = (),
             expect_refusal: bool = False, field_: str | None = None, extra: dict | None = None,
             limit_s: float = 30.0, watch: tuple[str, ...] = ()) -> Case:  # fmt: skip
        """A raw queue join (as the browser does) and its /queue/data stream."""
        case = Case(
            route,
            name,
            expect_refusal=expect_refusal,
            field_name=field_,
            marker=watch[-1] if watch else None,
            quotes_corpus="search" in route,
        )
        if self.left() <= 0:
            return case
        sh = session_hash if session_hash is not None else secrets.token_hex(6)
        payload = {"data": data, "fn_index": fn_index, "session_hash": sh, "event_data": None,
                   "trigger_id": None, **(extra or {})}  # fmt: skip
        url = "gradio_api/queue/join" + (f"?{urlencode(query)}" if query else "")
        start = time.monotonic()
        html: list[str] = []
        try:
            r = self.http.post(url, content=json.dumps(payload).encode(),
                               headers={"content-type": "application/json"})  # fmt: skip
            case.status = r.status_code
            case.body = r.content[:MAX_BODY_KEEP].decode("utf-8", "replace")
            if r.status_code == 200 and isinstance(sh, str):
                case.event = "timeout"
                for ev, text in self._sse("gradio_api/queue/data", {"session_hash": sh},
                                          min(limit_s, max(self.left(), 1.0))):  # fmt: skip
                    if ev in ("timeout", "http"):
                        case.event, case.body = ev, text
                        break
                    try:
                        msg = json.loads(text)
                    except ValueError:
                        continue
                    if msg.get("msg") == "process_completed":
                        out = msg.get("output") or {}
                        case.event = "complete" if msg.get("success") else "error"
                        case.body = json.dumps(out)[:MAX_BODY_KEEP]
                        values = out.get("data") if isinstance(out, dict) else None
                        for i in html_outputs:
                            if isinstance(values, list) and i < len(values):
                                html.append(_html_value(values[i]))
                        if case.event == "error":
                            self._check_error_payload(case, out)
                            html.append(str(out.get("error") or ""))  # the toast renders HTML
                        break
                    if msg.get("msg") == "unexpected_error":
                        case.event, case.body = "error", text
                        break
        except httpx.HTTPError as exc:
            case.body += f"<no response: {type(exc).__name__}: {exc}>"
            _no_response(case, exc)
        case.elapsed_s = time.monotonic() - start
        self.record(case, html=html)
        leaked = self.files.quick(case.marker, watch) if case.marker else []
        if leaked:
            case.failures.append(f"file: {len(leaked)} path(s) outside the data folder")
            self.report.outside_files = sorted(set(self.report.outside_files) | set(leaked))
        return case

    # -- discovery ------------------------------------------------------------------------

    def discover(self) -> None:
        try:
            self.config = self.http.get("config").json()
        except (httpx.HTTPError, ValueError):
            self.config = {}
        try:
            info = self.http.get("gradio_api/info").json()
            for api, spec in info.get("named_endpoints", {}).items():
                self.api_params[api.lstrip("/")] = spec.get("parameters", [])
        except (httpx.HTTPError, ValueError, AttributeError):
            pass

    def positional(self, api: str, kwargs: dict) -> list:
        params = self.api_params.get(api) or [{"parameter_name": n} for n in FALLBACK_PARAMS[api]]
        out = []
        for p in params:
            name = p.get("parameter_name")
            if name in kwargs:
                out.append(kwargs[name])
            else:
                out.append(p.get("parameter_default") if p.get("parameter_has_default") else None)
        return out

    def components(self) -> dict[int, dict]:
        return {c["id"]: c for c in self.config.get("components", [])}

    def dependency(self, pred: Callable[[dict, dict[int, dict]], bool]) -> dict | None:
        comps = self.components()
        return next((d for d in self.config.get("dependencies", []) if pred(d, comps)), None)

    def ui_inputs(self, dep: dict, overrides: dict[str, Any]) -> list:
        """A browser's data for `dep`: each input's default, with overrides by elem_id."""
        comps, data = self.components(), []
        for cid in dep.get("inputs", []):
            props = comps.get(cid, {}).get("props", {})
            elem = props.get("elem_id") or ""
            key = next((k for k in overrides if elem == k or elem.endswith(k)), None)
            data.append(overrides[key] if key is not None else props.get("value"))
        return data

    def html_outputs(self, dep: dict) -> tuple[int, ...]:
        comps = self.components()
        return tuple(i for i, cid in enumerate(dep.get("outputs", []))
                     if comps.get(cid, {}).get("type") == "html")  # fmt: skip


FALLBACK_PARAMS = {
    "complete": ["prompt", "model", "max_new_tokens", "temperature", "top_p",
                 "repetition_penalty", "seed", "stop"],
    "fill": ["prompt", "model", "max_new_tokens", "temperature", "top_p", "repetition_penalty",
             "seed", "stop"],
    "assist": ["message", "history", "model", "max_new_tokens", "temperature", "top_p",
               "repetition_penalty", "seed", "stop"],
    "share": ["mode", "prompt", "output", "parameters", "model"],
    "attribute": ["text"],
    "search": ["query", "repo", "license", "lang", "page", "exact"],
}  # fmt: skip


def _no_response(case: Case, exc: Exception) -> None:
    """A dropped connection is the server failing (uvicorn drops it when the app raises after
    it started answering); a timeout is only slow."""
    if isinstance(exc, httpx.TimeoutException):
        case.concerns.append(f"no answer in time ({type(exc).__name__})")
    elif isinstance(exc, httpx.TransportError):
        case.failures.append(f"5xx: connection dropped without a response ({type(exc).__name__})")


def _html_value(value: Any) -> str:
    """The HTML a gr.HTML output renders: a string, or an update dict's `value`. (Markdown and
    Chatbot values are markdown that Gradio sanitizes in the browser, so they are not checked.)"""
    if isinstance(value, dict):
        value = value.get("value", "")
    return value if isinstance(value, str) else ""


# -- the cases, by route -----------------------------------------------------------------------


def _share_body(**over) -> dict:
    body = {"mode": "completion", "prompt": "def f(x):\n", "output": "def f(x):\n    return x\n",
            "parameters": {"temperature": 0.2}, "model": "tiny-starcoder"}  # fmt: skip
    body.update(over)
    return {k: v for k, v in body.items() if v is not _MISSING}


_MISSING = object()


def nested(depth: int) -> str:
    return '{"a":' * depth + "1" + "}" * depth


def shares_cases(p: Probe) -> dict[str, str]:
    """POST /api/shares. Returns ids of hostile-but-valid shares for the page cases."""
    route = "/api/shares"
    made: dict[str, str] = {}

    def post(name, body=None, *, content=None, ctype="application/json", headers=None,
             refuse=True, fld=None):  # fmt: skip
        if content is None:
            content = json.dumps(body).encode()
        hdrs = {"content-type": ctype, **(headers or {})} if ctype else dict(headers or {})
        return p.request(route, name, "POST", "api/shares", content=content, headers=hdrs,
                         expect_refusal=refuse, field_=fld)  # fmt: skip

    # Valid but hostile content first (before any rate limit): the pages render these.
    hostile = {  # name: (body, expected refusal field or None)
        "script-everywhere": (_share_body(
            prompt=f"{INJECT}{INJECT_ATTR}\n", output=f"{INJECT}{INJECT_ATTR}\nx = 1\n",
            model=INJECT, parameters={"temperature": 0.2, "language": INJECT_ATTR,
                                      "stop": [INJECT]}), None),
        "fim-out-of-range": (_share_body(mode="fim", prompt="a<FILL_HERE>b", output="ab",
                                         fim={"middle_start": -5, "middle_end": 10**9}), "fim"),
        "spans-bogus": (_share_body(spans=[{"start": 5, "end": 1, "text": INJECT,
                                            "sources": [{"repo": INJECT}]}]), "spans"),
        "spans-with-html-sources": (_share_body(output="import os\nimport sys\n", spans=[
            {"start": 0, "end": 9, "text": "import os", "sources": [
                {"repo": INJECT, "path": INJECT_ATTR, "license": INJECT, "start_line": 1,
                 "end_line": 1}]}]), None),
        "assistant-script": (_share_body(mode="assistant", prompt=INJECT, output=INJECT_ATTR),
                             None),
        "unicode": (_share_body(prompt="a\u202e\U0001F600", output="a\u202e\U0001F600b"), None),
        "NUL": (_share_body(prompt="a\x00", output="a\x00b"), "prompt"),
    }  # fmt: skip
    for name, (body, refusal) in hostile.items():
        case, resp = post(f"hostile content: {name}", body, refuse=refusal is not None,
                          fld=refusal)  # fmt: skip
        if resp is not None and resp.status_code in (200, 201):
            with contextlib.suppress(ValueError, KeyError, TypeError):
                made[name] = resp.json()["id"]
    case, resp = post("Host: evil.example", _share_body(prompt="host header"), refuse=False,
                      headers={"host": "evil.example"})  # fmt: skip
    if resp is not None and "evil.example" in case.body:
        case.concerns.append("the returned links are on the Host header's evil.example")
    case, resp = post("Origin: https://evil.example", _share_body(prompt="origin"), fld="origin",
                      headers={"origin": "https://evil.example"})  # fmt: skip
    if resp is not None and resp.headers.get("access-control-allow-origin") in (
        "*", "https://evil.example"):  # fmt: skip
        case.concerns.append("CORS allows https://evil.example")

    post("text/plain content type", _share_body(prompt="text/plain"), ctype="text/plain",
         refuse=False)  # fmt: skip
    post("form-encoded", content=b"mode=completion&prompt=x&output=y",
         ctype="application/x-www-form-urlencoded", fld="body|content-type")  # fmt: skip
    post("no content type", content=b"", ctype=None, fld="body|content-type")
    post("empty JSON object", {}, fld="mode")
    for missing in ("mode", "prompt", "output"):
        post(f"missing {missing}", _share_body(**{missing: _MISSING}), fld=missing)
    wrong = {"number": 12345, "list": ["x"], "object": {"$ne": 1}, "null": None}
    optional = ("parameters", "model", "fim", "spans")
    for fld in ("mode", "prompt", "output", "parameters", "model", "fim", "spans"):
        for kind, value in wrong.items():
            ok_null = kind == "null" and fld in optional
            ok_obj = kind == "object" and fld in ("parameters",)
            ok_list = kind == "list" and fld == "spans"
            post(f"{fld} as {kind}", _share_body(**{fld: value}),
                 refuse=not (ok_null or ok_obj or ok_list), fld=fld)  # fmt: skip
    post("parameters nested 100,000 deep",
         content=b'{"mode":"completion","prompt":"x","output":"x","parameters":'
         + nested(100_000).encode() + b"}", fld="parameters|body")  # fmt: skip
    post("JSON nested 100,000 deep (array)", content=b"[" * 100_000 + b"]" * 100_000, fld="body")
    post("invalid UTF-8", content=b'{"mode":"completion","prompt":"\xff\xfe\xc3","output":"x"}',
         fld="body")  # fmt: skip
    post("lone surrogate in prompt", content=b'{"mode":"completion","prompt":"\\ud800",'
         b'"output":"\\udfff"}', refuse=False)  # fmt: skip
    post("NaN in parameters", content=b'{"mode":"completion","prompt":"x","output":"x",'
         b'"parameters":{"temperature":NaN}}', fld="parameters")  # fmt: skip
    post("unknown fields", _share_body(admin=True, id="fixed", created_at="1970"), fld="admin")
    post("mode not a mode", _share_body(mode="../../etc/passwd"), fld="mode")
    post("body is a JSON list", ["mode", "prompt"], fld="body")
    post("body is not JSON", content=b"{mode: completion", fld="body")
    post("duplicate keys", content=b'{"mode":"completion","mode":"fim","prompt":"x",'
         b'"output":"x"}', refuse=False)  # fmt: skip
    p.raw_huge(route, "20 MiB body, Content-Length", "/api/shares", chunked=False)
    p.raw_huge(route, "20 MiB body, chunked", "/api/shares", chunked=True)
    p.request(route, "GET (method not allowed)", "GET", "api/shares", expect_refusal=True)
    p.request(route, "DELETE (method not allowed)", "DELETE", "api/shares", expect_refusal=True)
    p.request(route, "OPTIONS preflight from evil.example", "OPTIONS", "api/shares",
              headers={"origin": "https://evil.example",
                       "access-control-request-method": "POST"})  # fmt: skip
    return made


def share_page_cases(p: Probe, made: dict[str, str]) -> None:
    route = "/s/<id>"
    for name, sid in made.items():
        p.request(route, f"GET hostile share ({name})", "GET", f"s/{sid}", html_check=True)
    sid = next(iter(made.values()), "doesnotexist")
    p.request(route, "HEAD existing share", "HEAD", f"s/{sid}")
    p.request(route, "HEAD unknown id", "HEAD", "s/doesnotexist")
    raw = {
        "../../../../etc/passwd": "/s/../../../../etc/passwd",
        "%2e%2e%2f%2e%2e%2fetc%2fpasswd": "/s/%2e%2e%2f%2e%2e%2fetc%2fpasswd",
        "%2e%2e": "/s/%2e%2e",
        "..%5c..%5cwin.ini": "/s/..%5c..%5cwin.ini",
        "10 KB id": "/s/" + "a" * 10_000,
        "HTML/script id": "/s/" + quote(INJECT, safe=""),
        "attribute-breaking id": "/s/" + quote(INJECT_ATTR, safe=""),
        "NUL in id": "/s/abc%00def",
        "unicode id": "/s/" + quote("\u202e\U0001f600ü", safe=""),
        "SQL in id": "/s/" + quote("x' OR '1'='1", safe=""),
        "empty id": "/s/",
    }
    for name, target in raw.items():
        p.request(route, f"GET {name}", "GET", "s/x", target=target, html_check=True)

    route = "/s/<id>/delete"
    p.request(route, "GET no token", "GET", f"s/{sid}/delete", html_check=True,
              expect_refusal=True)  # fmt: skip
    p.request(route, "GET wrong token", "GET", f"s/{sid}/delete", params={"token": "wrong"},
              html_check=True, expect_refusal=True)  # fmt: skip
    p.request(route, "GET 8 KB token", "GET", f"s/{sid}/delete", params={"token": "t" * 8000},
              html_check=True, expect_refusal=True)  # fmt: skip
    p.request(route, "GET script token", "GET", f"s/{sid}/delete", params={"token": INJECT},
              html_check=True, expect_refusal=True)  # fmt: skip
    p.request(route, "GET repeated token", "GET", f"s/{sid}/delete?token=a&token=b",
              html_check=True, expect_refusal=True)  # fmt: skip
    p.request(route, "GET unknown id with script", "GET", "s/x/delete",
              target="/s/" + quote(INJECT, safe="") + "/delete?token=" + quote(INJECT, safe=""),
              html_check=True, expect_refusal=True)  # fmt: skip
    form = {"content-type": "application/x-www-form-urlencoded"}
    p.request(route, "POST wrong token", "POST", f"s/{sid}/delete", content=b"token=wrong",
              headers=form, html_check=True, expect_refusal=True)  # fmt: skip
    p.request(route, "POST no body", "POST", f"s/{sid}/delete", html_check=True,
              expect_refusal=True)  # fmt: skip
    p.request(route, "POST 1 MiB token", "POST", f"s/{sid}/delete",
              content=b"token=" + b"t" * 2**20, headers=form, html_check=True,
              expect_refusal=True)  # fmt: skip
    p.request(
        route,
        "POST invalid UTF-8 token",
        "POST",
        f"s/{sid}/delete",
        content=b"token=\xff\xfe%ff",
        headers=form,
        html_check=True,
        expect_refusal=True,
    )
    p.request(route, "POST JSON token object", "POST", f"s/{sid}/delete",
              content=b'{"token":{"$ne":""}}', headers={"content-type": "application/json"},
              html_check=True, expect_refusal=True)  # fmt: skip
    p.request(route, "POST traversal id", "POST", "s/x/delete",
              target="/s/..%2f..%2fapi%2fshares/delete", content=b"token=x", headers=form,
              html_check=True, expect_refusal=True)  # fmt: skip
    p.raw_huge(route, "POST 20 MiB body, chunked", f"/s/{sid}/delete", chunked=True,
               field_="token|body")  # fmt: skip
    p.request(route, "PUT (method not allowed)", "PUT", f"s/{sid}/delete", expect_refusal=True)


def generation_cases(p: Probe) -> None:
    """/complete, /fill, /assist: wrong types and hostile values for each parameter."""
    ok = {"max_new_tokens": GENERATE_TOKENS, "temperature": 0}
    for api, prompt_name, base in (("complete", "prompt", "def f(x):\n"),
                                   ("fill", "prompt", "def f(x):\n    <FILL_HERE>\n"),
                                   ("assist", "message", "How do I sort a list?")):  # fmt: skip

        def c(name, refuse=True, fld=None, api=api, prompt_name=prompt_name, base=base, **kw):
            args = {prompt_name: base, **ok, **kw}
            return p.call(api, name, kwargs=args, expect_refusal=refuse, field_=fld)

        c("baseline", refuse=False)
        c(f"{prompt_name} empty", fld=prompt_name, **{prompt_name: ""})
        c(f"{prompt_name} null", fld=prompt_name, **{prompt_name: None})
        c(f"{prompt_name} number", fld=prompt_name, **{prompt_name: 12345})
        c(f"{prompt_name} object", fld=prompt_name, **{prompt_name: {"$ne": 1}})
        c(f"{prompt_name} 1 MB", fld=prompt_name, **{prompt_name: "x = 1\n" * 170_000})
        c(f"{prompt_name} with NUL", refuse=False, **{prompt_name: base + "\x00"})
        c(f"{prompt_name} lone surrogate", refuse=False, **{prompt_name: base + "\ud800"})
        c(f"{prompt_name} special tokens", refuse=False,
          **{prompt_name: "<|endoftext|><fim_prefix><fim_middle>" + base})  # fmt: skip
        c(f"{prompt_name} HTML", refuse=False, **{prompt_name: INJECT + base})
        if api == "complete":
            for v in (10**12, -1, 0, 1.5, "x", None, [4]):
                c(f"max_new_tokens {v!r}", fld="max_new_tokens", max_new_tokens=v)
            for v in (float("nan"), float("inf"), -1, 5, "hot", [0.2]):
                c(f"temperature {v!r}", fld="temperature", temperature=v)
            for v in (0, 2, float("nan"), "x"):
                c(f"top_p {v!r}", fld="top_p", top_p=v)
            for v in (0, -5, 1e308, "x"):
                c(f"repetition_penalty {v!r}", fld="repetition_penalty", repetition_penalty=v)
            for v in (2**70, -1, 1.5, "abc", {"a": 1}):
                c(f"seed {v!r}", fld="seed", refuse=v not in (-1,), seed=v)
            for v in ({"a": 1}, [None], ["x"] * 100, ["y" * 100_000], 7):
                c(f"stop {str(v)[:30]}", fld="stop", stop=v)
            c("stop empty string", refuse=False, stop=[""])
            for v in ("no-such-model", "../../../../etc/passwd", {"$ne": 1}, 5, INJECT):
                c(f"model {v!r}", fld="model", model=v)
            p.call(api, "data has 20 values", data=[base] + [None] * 19, expect_refusal=True)
            p.call(api, "data is a string", body=b'{"data": "x"}', expect_refusal=True,
                   field_="data")  # fmt: skip
            p.call(api, "body is not JSON", body=b"{data: [", expect_refusal=True)
            p.call(api, "JSON nested 100,000 deep", expect_refusal=True,
                   body=b'{"data": [' + b"[" * 100_000 + b"]" * 100_000 + b"]}")  # fmt: skip
            p.call(api, "Host: evil.example", kwargs={prompt_name: base, **ok},
                   headers={"host": "evil.example"})  # fmt: skip
            p.raw_huge(f"/gradio_api/call/{api}", "20 MiB body, chunked",
                       f"/gradio_api/call/{api}", chunked=True)  # fmt: skip
            p.raw_huge(f"/gradio_api/call/{api}", "20 MiB body, Content-Length",
                       f"/gradio_api/call/{api}", chunked=False)  # fmt: skip
        if api == "fill":
            c("no <FILL_HERE>", fld="<FILL_HERE>", prompt="def f(x):\n    return x\n")
            c("two <FILL_HERE>", fld="<FILL_HERE>", prompt="a<FILL_HERE>b<FILL_HERE>c")
            c("only <FILL_HERE>", refuse=False, prompt="<FILL_HERE>")
            c("max_new_tokens -1", fld="max_new_tokens", max_new_tokens=-1)
            c("model without FIM", fld="model", model="smollm2-135m-instruct")
        if api == "assist":
            for name, h in (("a string", "hello"), ("numbers", [1, 2]), ("one-item turn", [["a"]]),
                            ("three-item turn", [["a", "b", "c"]]),
                            ("messages dicts", [{"role": "user", "content": "x"}]),
                            ("null pair", [[None, None]]), ("objects", [[{"a": 1}, ["x"]]]),
                            ("object", {"turns": 1})):  # fmt: skip
                c(f"history {name}", fld="history", history=h)
            c("history with HTML", refuse=False, history=[[INJECT, INJECT_ATTR]])
            c("seed -1", fld="seed", seed=-1, refuse=False)


def heavy_cases(p: Probe) -> None:
    """Last, because a server that has not fixed them may keep a core busy long after."""
    ok = {"message": "And now?", "max_new_tokens": GENERATE_TOKENS, "temperature": 0}
    p.call("assist", "history 1,000 turns", kwargs={**ok, "history": [["1+1?", "2"]] * 1000},
           limit_s=10)  # fmt: skip
    p.call("assist", "history 1,000 turns of 1 KB", kwargs={
        **ok, "history": [["q" * 500, "a" * 500]] * 1000}, expect_refusal=True,
        field_="history", limit_s=10)  # fmt: skip


def share_api_cases(p: Probe) -> None:
    api = "share"
    good = {"mode": "completion", "prompt": "def f(", "output": "def f(x): pass\n"}

    def c(name, refuse=True, fld=None, **kw):
        return p.call(api, name, kwargs={**good, **kw}, expect_refusal=refuse, field_=fld)

    c("baseline", refuse=False)
    c("mode evil", fld="mode", mode="evil")
    c("mode null", fld="mode", mode=None)
    c("prompt object", fld="prompt", prompt={"$ne": 1})
    c("output list", fld="output", output=["x"])
    c("parameters list", fld="parameters", parameters=[1, 2])
    c("parameters string", fld="parameters", parameters="temperature=2")
    c("parameters 500 deep", fld="parameters", parameters=json.loads(nested(500)))
    c("model object", fld="model", model={"$ne": 1})
    c("output 6 MB", fld="output|body", output="y" * 6_000_000)
    c("HTML everywhere", refuse=False, prompt=INJECT, output=INJECT_ATTR, model=INJECT)
    case = p.call(api, "Host: evil.example", kwargs={**good, "prompt": "host"},
                  headers={"host": "evil.example"})  # fmt: skip
    if "evil.example" in case.body:
        case.concerns.append("the returned link is on the Host header's evil.example")


def attribute_search_cases(p: Probe) -> None:
    def a(name, text, refuse=True):
        return p.call("attribute", name, kwargs={"text": text}, expect_refusal=refuse,
                      field_="text")  # fmt: skip

    a("baseline", "import os\nimport sys\n", refuse=False)
    a("text null", None)
    a("text number", 5)
    a("text object", {"a": 1})
    a("text empty", "", refuse=False)
    a("text 1 MB", "def f(x):\n    return x\n" * 40_000)
    a("text with NUL", "import os\x00\n", refuse=False)
    a("text lone surrogate", "import os\ud800\n", refuse=False)

    def s(name, refuse=True, fld=None, **kw):
        args = {"query": "json decoder", "page": 1, **kw}
        return p.call("search", name, kwargs=args, expect_refusal=refuse, field_=fld)

    s("baseline", refuse=False)
    for v in (0, 1.5, -1, "x", 10**12, None, [1]):
        s(f"page {v!r}", fld="page", refuse=v is not None, page=v)
    s("repo {'$ne': 1}", fld="repo", repo={"$ne": 1})
    s("license [1]", fld="license", license=[1])
    s("lang 5", fld="lang", lang=5)
    s("exact object", fld="exact", exact={"a": 1})
    s("query empty", fld="query", refuse=False, query="")
    s("query null", fld="query", query=None)
    s("query number", fld="query", query=42)
    for q in ('"', "NEAR(a b", "a OR", "*", "col:val", "a AND (b", "') OR 1=1 --", "^x"):
        s(f"FTS syntax {q!r}", refuse=False, query=q)
    s("query 100 KB", fld="query", query="word " * 20_000)
    s("exact FTS syntax", refuse=False, query='"a" OR "b', exact=True)


def ui_cases(p: Probe) -> None:
    """The browser's own events through raw queue joins: hostile session hashes, HTML outputs."""
    comps = p.components()

    def gen_dep(prefix: str):
        def pred(d, cs):
            outs = [cs.get(o, {}).get("type") for o in d.get("outputs", [])]
            ins = [cs.get(i, {}).get("props", {}).get("elem_id") for i in d.get("inputs", [])]
            return "downloadbutton" in outs and f"{prefix}-prompt" in ins

        return p.dependency(pred)

    gen = gen_dep("completion") or p.dependency(
        lambda d, cs: "downloadbutton" in [cs.get(o, {}).get("type") for o in d["outputs"]]
    )
    route = "/gradio_api/queue/join (generate)"
    if gen is None:
        p.report.cases.append(
            Case(
                route,
                "find the generate event in /config",
                body=json.dumps(p.config)[:500],
                failures=[],
                concerns=["no event with a DownloadButton output"],
            )
        )
        return
    overrides = {"prompt": "def f(x):\n", "max-new-tokens": GENERATE_TOKENS, "temperature": 0}
    data = p.ui_inputs(gen, overrides)
    outs = p.html_outputs(gen)
    hashes = {
        "/tmp/<marker>": "/tmp/{m}",
        "../../../../tmp/<marker>": "../../../../tmp/{m}",
        "../../../../../../../../<marker>": "../../../../../../../../{m}",
        "..": "..",
        ".": ".",
        "a/../../<marker>-b": "a/../../{m}-b",
        "../<marker>": "../{m}",
        "10 KB string": "{m}" + "A" * 10_000,
        "unicode": "{m}-\u202e\U0001f600ü",
        "NUL byte": "{m}\x00.py",
        "backslashes": "..\\..\\{m}",
        "empty": "",
        "HTML": INJECT + "{m}",
    }
    for name, template in hashes.items():
        m = p.new_marker()
        sh = template.replace("{m}", m)
        p.join(route, f"session_hash {name}", gen["id"], data, session_hash=sh,
               html_outputs=outs, watch=(sh, m))  # fmt: skip
    # Data the browser would never send.
    p.join(route, "prompt with HTML", gen["id"], p.ui_inputs(gen, {**overrides,
           "prompt": INJECT + INJECT_ATTR + "\n"}), html_outputs=outs)  # fmt: skip
    p.join(route, "session_hash a number", gen["id"], data, session_hash=12345,
           expect_refusal=True, field_="session_hash")  # fmt: skip
    p.join(route, "fn_index 99999", 99999, data, expect_refusal=True, field_="fn_index")
    p.join(route, "fn_index -1", -1, data, expect_refusal=True)
    p.join(route, "fn_index string", "x", data, expect_refusal=True, field_="fn_index")
    p.join(route, "data not a list", gen["id"], "x", expect_refusal=True, field_="data")
    p.join(route, "data too short", gen["id"], data[:2], expect_refusal=True)
    p.join(route, "data wrong types", gen["id"], [{"a": 1}] * len(data), expect_refusal=True)
    p.join(route, "max new tokens 10^9", gen["id"], p.ui_inputs(gen, {**overrides,
           "max-new-tokens": 10**9}), expect_refusal=True, field_="max_new_tokens",
           html_outputs=outs)  # fmt: skip
    p.join(route, "model not a choice", gen["id"], p.ui_inputs(gen, {**overrides,
           "model": "../../etc/passwd"}), expect_refusal=True, field_="model",
           html_outputs=outs)  # fmt: skip
    p.join(route, "trigger_id string", gen["id"], data, extra={"trigger_id": "x"},
           expect_refusal=True)  # fmt: skip
    fim = gen_dep("fim")
    if fim is not None:
        p.join("/gradio_api/queue/join (fill)", "prompt with HTML and <FILL_HERE>", fim["id"],
               p.ui_inputs(fim, {**overrides, "prompt": f"{INJECT}<FILL_HERE>{INJECT_ATTR}"}),
               html_outputs=p.html_outputs(fim))  # fmt: skip
        p.join("/gradio_api/queue/join (fill)", "two <FILL_HERE>", fim["id"],
               p.ui_inputs(fim, {**overrides, "prompt": f"{INJECT}<FILL_HERE><FILL_HERE>"}),
               html_outputs=p.html_outputs(fim), expect_refusal=True,
               field_="FILL_HERE")  # fmt: skip

    search = p.dependency(
        lambda d, cs: any(
            cs.get(i, {}).get("props", {}).get("elem_id") == "search-query" for i in d["inputs"]
        )
    )
    if search is not None:
        route = "/gradio_api/queue/join (search)"
        so = p.html_outputs(search)
        p.join(
            route,
            "query with HTML",
            search["id"],
            p.ui_inputs(search, {"search-query": INJECT, "search-page": 1}),
            html_outputs=so,
        )
        p.join(route, "filters with HTML", search["id"], p.ui_inputs(search, {
            "search-query": "json", "search-repo": INJECT, "search-license": INJECT_ATTR,
            "search-lang": INJECT, "search-page": 1}), html_outputs=so)  # fmt: skip
        p.join(route, "page -1 and HTML query", search["id"],
               p.ui_inputs(search, {"search-query": INJECT, "search-page": -1}),
               html_outputs=so, expect_refusal=True, field_="page")  # fmt: skip

    chat = p.dependency(
        lambda d, cs: any(
            cs.get(i, {}).get("props", {}).get("elem_id") == "assistant-message"
            for i in d["inputs"]
        )
    )
    if chat is not None:
        route = "/gradio_api/queue/join (assistant)"
        co = p.html_outputs(chat)
        p.join(route, "chat history wrong shape", chat["id"], p.ui_inputs(chat, {
            **overrides, "assistant-message": "hi", "assistant-chat": [["a", "b", "c"]]}),
            html_outputs=co, expect_refusal=True, field_="history")  # fmt: skip
        p.join(route, "message with HTML", chat["id"], p.ui_inputs(chat, {
            **overrides, "assistant-message": INJECT, "assistant-chat": []}),
            html_outputs=co)  # fmt: skip
    _ = comps


def page_cases(p: Probe, made: dict[str, str]) -> None:
    """`/?share=` page loads, and the load event that opens the share."""
    route = "/?share="
    values = {"HTML": INJECT, "attribute breaking": INJECT_ATTR, "traversal": "../../etc/passwd",
              "10 KB": "s" * 10_000, "NUL": "a\x00b"}  # fmt: skip
    for name, v in values.items():
        case, _ = p.request(route, f"page, share {name}", "GET", "", params={"share": v},
                               html_check=True)  # fmt: skip
        if case.status is not None and case.status != 200:
            case.concerns.append(f"the page answered {case.status}, not 200")
    load = p.dependency(lambda d, cs: any(t[1] == "load" for t in d.get("targets", [])
                                          if isinstance(t, list) and len(t) > 1))  # fmt: skip
    if load is None:
        return
    route = "/gradio_api/queue/join (load ?share=)"
    outs = p.html_outputs(load)
    for name, v in {**values, **{f"hostile share {k}": sid for k, sid in made.items()}}.items():
        p.join(route, f"open share {name}", load["id"], [], query={"share": v},
               html_outputs=outs)  # fmt: skip


def ops_cases(p: Probe) -> None:
    def get(route, name, url=None, method="GET", refuse=False, **kw):
        return p.request(route, name, method, url if url is not None else route.lstrip("/"),
                         expect_refusal=refuse, **kw)  # fmt: skip

    get("/healthz", "GET", allow_503=True)  # 503 until a model can generate: by design
    get("/healthz", "POST (method not allowed)", method="POST", refuse=True)
    get("/metrics", "GET")
    get("/metrics", "PUT (method not allowed)", method="PUT", refuse=True)
    get("/monitoring", "GET", refuse=True)
    get("/monitoring", "GET with a guessed key", url="monitoring/abc", refuse=True)
    get("/gradio_api/info", "GET")
    get("/config", "GET")
    get("/gradio_api/openapi.json", "GET")
    get("/gradio_api/dev/reload", "GET (endless stream in dev mode)", stream_limit_s=2.0)
    get(
        "/gradio_api/heartbeat/<hash>",
        "GET hostile hash",
        url="gradio_api/heartbeat/" + quote("../../" + INJECT, safe=""),
        stream_limit_s=2.0,
    )
    get("/gradio_api/queue/data", "GET unknown session", url="gradio_api/queue/data",
        params={"session_hash": "../" + INJECT}, stream_limit_s=3.0)  # fmt: skip
    get(
        "/gradio_api/cancel",
        "POST hostile body",
        url="gradio_api/cancel",
        method="POST",
        json={"session_hash": "../x", "fn_index": -1, "event_id": INJECT},
        refuse=False,
    )
    for name, path in (("/etc/passwd", "/etc/passwd"),
                       ("the share database", os.path.join(p.data_dir, "playground.db")),
                       ("traversal", "../../../../etc/passwd")):  # fmt: skip
        case, _ = get("/gradio_api/file=", f"file= {name}", url=f"gradio_api/file={path}",
                         refuse=True)  # fmt: skip
        if case.status == 200 and ("root:" in case.body or "SQLite format" in case.body):
            case.concerns.append("serves a file it should not")
    # Uploads: a large file named with the marker; Gradio would keep it in its cache folder.
    m = p.new_marker()
    size = UPLOAD_BYTES
    files = {"files": (f"{m}.bin", b"\0" * size, "application/octet-stream")}
    case, _ = get("/gradio_api/upload", f"upload {size // 2**20} MiB", url="gradio_api/upload",
                  method="POST", files=files)  # fmt: skip
    case.marker = m
    m2 = p.new_marker()
    files = {"files": (f"../../../../tmp/{m2}.py", b"print(1)\n", "text/x-python")}
    case, _ = get("/gradio_api/upload", "upload with a traversal filename",
                  url="gradio_api/upload", method="POST", files=files)  # fmt: skip
    case.marker = m2
    get("/gradio_api/upload", "GET (method not allowed)", url="gradio_api/upload", refuse=True)
    get("/<unknown>", "GET unknown path", url="no/such/page", refuse=True)
    get("/<unknown>", "GET unknown API", url="gradio_api/call/nope", refuse=True)
    p.call("nope", "POST unknown API name", data=[], expect_refusal=True,
           route="/gradio_api/call/<unknown>")  # fmt: skip
    get("/", "PATCH (method not allowed)", url="", method="PATCH", refuse=True)
    get("/", "TRACE", url="", method="TRACE", refuse=True)
    get("/", "8 KB path", url="", target="/" + "x" * 8192, refuse=True)
    for route, url in (("/", ""), ("/config", "config")):
        case, _ = get(route, "Host: evil.example", url=url, headers={"host": "evil.example"},
                      html_check=True)  # fmt: skip
        if "evil.example" in case.body:
            case.concerns.append("the response names the Host header's evil.example")
    get("/config", "200 headers", headers={f"x-h{i}": "v" * 100 for i in range(200)})


GROUPS = ("shares", "share_pages", "pages", "ui", "generation", "share_api", "attribute_search",
          "ops", "heavy")  # fmt: skip


def run_probe(base_url: str, data_dir: str, max_seconds: float = 240.0,
              groups: tuple[str, ...] = GROUPS) -> ProbeReport:  # fmt: skip
    """Run every case against the app at `base_url` (loopback only) whose data folder is
    `data_dir`; returns the report (see the module docstring for what fails a case)."""
    start = time.monotonic()
    p = Probe(base_url, data_dir, max_seconds=max_seconds)
    try:
        p.discover()
        made = shares_cases(p) if "shares" in groups else {}
        steps = {"share_pages": lambda: share_page_cases(p, made),
                 "pages": lambda: page_cases(p, made), "ui": lambda: ui_cases(p),
                 "generation": lambda: generation_cases(p),
                 "share_api": lambda: share_api_cases(p),
                 "attribute_search": lambda: attribute_search_cases(p),
                 "ops": lambda: ops_cases(p), "heavy": lambda: heavy_cases(p)}  # fmt: skip
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
        p.http.close()
    p.report.cases = [c for c in p.report.cases if c.status is not None or c.event or c.body
                      or c.failures or c.concerns]  # fmt: skip
    p.report.wall_s = time.monotonic() - start
    return p.report


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
        hits = [path for path in leaked if case.marker and _named(case.marker, path)]
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
