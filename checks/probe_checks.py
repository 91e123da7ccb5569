"""What fails a probe case, and the report: the rules of checks/probe.py's docstring applied to
each finished case, the files a case made the server leave outside the data folder, and the
tables the CLI prints."""

from __future__ import annotations

import contextlib
import json
import os
import re
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

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
# held: generations left running after their client went; link: a share link on a forged host
FAIL_KINDS = ("5xx", "trace", "file", "inject", "held", "link")
RATE_LIMITED = re.compile(r"too many .{0,40}limit is|try again in \d+ ?s|rate.?limit", re.I)


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
    healthz_ms: list[float] = field(default_factory=list)  # sampled all through the run

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
            r = out.setdefault(
                c.route,
                {
                    "cases": 0,
                    **dict.fromkeys(FAIL_KINDS, 0),
                    "failed": 0,
                    "refusals": 0,
                    "precise": 0,
                    "concerns": 0,
                },
            )
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
            ("generations left running after their client went", self.count("held")),
            ("share links on a forged host", self.count("link")),
            ("failing cases", len(self.failing)),
            ("expected refusals: precise (name the field)",
             f"{sum(c.precise == 'yes' for c in refusals)}/{len(refusals)}"),
            ("expected refusals: accepted instead",
             sum(c.precise == "accepted" for c in self.cases)),
            ("cases with concerns (not failures)", sum(bool(c.concerns) for c in self.cases)),
            ("server answering after the probe", "yes" if self.server_alive else "NO"),
            ("`/healthz` under the probe: p50 / p99 / max", self.healthz_text()),
            ("wall time", f"{self.wall_s:.1f} s"),
        ]  # fmt: skip
        lines = ["| check | result |", "|---|---|"]
        lines += [f"| {k} | {v} |" for k, v in rows]
        return "\n".join(lines)

    def healthz_text(self) -> str:
        ms = sorted(self.healthz_ms)
        if not ms:
            return "-"
        pick = lambda q: ms[min(len(ms) - 1, int(q * len(ms)))]  # noqa: E731
        return f"{pick(0.5):.0f} / {pick(0.99):.0f} / {ms[-1]:.0f} ms ({len(ms)} samples)"

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
            lines.append(
                f"- [{c.route}] {c.name}: status {c.status_text()} "
                f"({'; '.join(c.failures)})\n    {_short(c.body)}"
            )
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
        lines = [
            f"- [{c.route}] {c.name} ({c.field_name}): status {c.status_text()}: {_short(c.body, 160)}"
            for c in self.cases
            if c.expect_refusal and c.precise == "no"
        ]
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


def trace_text(body: str) -> str | None:
    for pattern in TRACE_PATTERNS:
        m = pattern.search(body)
        if m:
            return m.group(0)[:80]
    return None


def injected(html: str) -> str | None:
    low = html.lower()
    return next((n for n in INJECT_NEEDLES if n.lower() in low), None)


def check(
    case: Case,
    *,
    html: list[str] = (),
    check_html_body: bool = False,
    headers: httpx.Headers | None = None,
) -> None:
    """Applies the failure rules to a finished case: its failures, concerns and precision."""
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
        case.precise = precision(case)


def precision(case: Case) -> str:
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


def check_error_payload(case: Case, payload: Any = None) -> None:
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


def no_response(case: Case, exc: Exception) -> None:
    """A dropped connection is the server failing (uvicorn drops it when the app raises after
    it started answering); a timeout is only slow."""
    if isinstance(exc, httpx.TimeoutException):
        case.concerns.append(f"no answer in time ({type(exc).__name__})")
    elif isinstance(exc, httpx.TransportError):
        case.failures.append(f"5xx: connection dropped without a response ({type(exc).__name__})")


def html_value(value: Any) -> str:
    """The HTML a gr.HTML output renders: a string, or an update dict's `value`. (Markdown and
    Chatbot values are markdown that Gradio sanitizes in the browser, so they are not checked.)"""
    if isinstance(value, dict):
        value = value.get("value", "")
    return value if isinstance(value, str) else ""


def named(marker: str, name: str) -> bool:
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
        for path in [c for n in names for c in self.candidates(n) if named(marker, c)]:
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
                    if named(marker, entry) and not _is_inside(full, self.data_dir):
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
