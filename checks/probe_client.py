"""The probe's client: one hostile request (or queue round trip) per case, bounded in time and
bytes, recorded with the failure rules of checks/probe_checks.py. Loopback only."""

from __future__ import annotations

import contextlib
import json
import re
import secrets
import select
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit

import httpx

from checks.probe_checks import (
    Case,
    FileWatch,
    ProbeReport,
    check,
    check_error_payload,
    html_value,
    no_response,
)

MAX_BODY_KEEP = 64 * 1024  # bytes of each response kept for the checks
HUGE_BODY = 20 * 2**20


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
            base_url=self.base,
            timeout=httpx.Timeout(15.0, connect=5.0),
            follow_redirects=False,
            limits=httpx.Limits(max_keepalive_connections=0),
        )
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

    def record(
        self,
        case: Case,
        *,
        html: list[str] = (),
        check_html_body: bool = False,
        headers: httpx.Headers | None = None,
    ) -> Case:
        check(case, html=html, check_html_body=check_html_body, headers=headers)
        self.report.cases.append(case)
        return case

    # -- plain HTTP -----------------------------------------------------------------------

    def request(
        self,
        route: str,
        name: str,
        method: str,
        url: str,
        *,
        target: str | None = None,
        expect_refusal: bool = False,
        field_: str | None = None,
        html_check: bool = False,
        stream_limit_s: float | None = None,
        allow_503: bool = False,
        **kwargs,
    ) -> tuple[Case, httpx.Response | None]:
        """One request; `target` sends the raw request target (no path normalisation)."""
        case = Case(
            route, name, expect_refusal=expect_refusal, field_name=field_, allow_503=allow_503
        )
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
            no_response(case, exc)
        except (httpx.InvalidURL, ValueError, UnicodeError) as exc:  # the probe could not send it
            case.body = f"<not sent: {type(exc).__name__}: {exc}>"
            case.concerns.append("the probe could not send this case")
        case.elapsed_s = time.monotonic() - start
        self.record(
            case, headers=resp.headers if resp is not None else None, check_html_body=html_check
        )
        return case, resp

    def raw_huge(
        self,
        route: str,
        name: str,
        path: str,
        *,
        chunked: bool,
        total: int = HUGE_BODY,
        field_: str = "body",
    ) -> Case:
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

    def call(
        self,
        api: str,
        name: str,
        data: Any = None,
        *,
        kwargs: dict | None = None,
        expect_refusal: bool = False,
        field_: str | None = None,
        body: bytes | None = None,
        headers: dict | None = None,
        limit_s: float = 30.0,
        route: str | None = None,
    ) -> Case:
        """A named endpoint through /gradio_api/call/<api> (POST, then the SSE result)."""
        route = route or f"/gradio_api/call/{api}"
        case = Case(
            route,
            name,
            expect_refusal=expect_refusal,
            field_name=field_,
            quotes_corpus=api in ("search", "attribute"),
        )
        if self.left() <= 0:
            return case
        if kwargs is not None:
            data = self.positional(api, kwargs)
        if body is None:
            body = json.dumps({"data": data}).encode()  # NaN, inf and lone surrogates survive
        start = time.monotonic()
        try:
            r = self.http.post(
                f"gradio_api/call/{api}",
                content=body,
                headers={"content-type": "application/json", **(headers or {})},
            )
            case.status = r.status_code
            case.body = r.content[:MAX_BODY_KEEP].decode("utf-8", "replace")
            if r.status_code == 200 and "event_id" in case.body:
                event_id = r.json()["event_id"]
                case.event, case.body = "timeout", ""
                for ev, payload in self._sse(
                    f"gradio_api/call/{api}/{event_id}", None, min(limit_s, max(self.left(), 1.0))
                ):
                    if ev in ("complete", "error", "timeout", "http"):
                        case.event, case.body = ev, payload
                        break
                check_error_payload(case)
        except (httpx.HTTPError, ValueError) as exc:
            case.body += f"<no response: {type(exc).__name__}: {exc}>"
            no_response(case, exc)
        case.elapsed_s = time.monotonic() - start
        return self.record(case)

    def join(
        self,
        route: str,
        name: str,
        fn_index: Any,
        data: Any,
        *,
        session_hash: Any = None,
        query: dict | None = None,
        html_outputs: tuple[int, ...] = (),
        expect_refusal: bool = False,
        field_: str | None = None,
        extra: dict | None = None,
        limit_s: float = 30.0,
        watch: tuple[str, ...] = (),
    ) -> Case:
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
            r = self.http.post(
                url,
                content=json.dumps(payload).encode(),
                headers={"content-type": "application/json"},
            )
            case.status = r.status_code
            case.body = r.content[:MAX_BODY_KEEP].decode("utf-8", "replace")
            if r.status_code == 200 and isinstance(sh, str):
                case.event = "timeout"
                for ev, text in self._sse(
                    "gradio_api/queue/data",
                    {"session_hash": sh},
                    min(limit_s, max(self.left(), 1.0)),
                ):
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
                                html.append(html_value(values[i]))
                        if case.event == "error":
                            check_error_payload(case, out)
                            html.append(str(out.get("error") or ""))  # the toast renders HTML
                        break
                    if msg.get("msg") == "unexpected_error":
                        case.event, case.body = "error", text
                        break
        except httpx.HTTPError as exc:
            case.body += f"<no response: {type(exc).__name__}: {exc}>"
            no_response(case, exc)
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
        return tuple(
            i
            for i, cid in enumerate(dep.get("outputs", []))
            if comps.get(cid, {}).get("type") == "html"
        )


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
