"""The reliability battery's harness: the real app in-process on a fresh data dir, one /complete
call through HTTP + SSE as a client sees it, the result rows, and a tap on the server's log."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import httpx

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

ROOT = Path(__file__).resolve().parents[1]
log = logging.getLogger("checks.chaos")  # the rows log as the battery they belong to

CALL_LIMIT_S = 120.0  # no single generation call may take longer: beyond it, a hang


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
        from model.paths import default_data_dir

        self.data = Path(tempfile.mkdtemp(prefix="chaos-app-"))
        converted = default_data_dir() / "models"
        if converted.is_dir():  # skip the 30-45 s GGUF conversion
            (self.data / "models").symlink_to(converted, target_is_directory=True)
        self.argv = ["--data-dir", str(self.data), "--port", "0", "--device", "cpu",
                     "--rate-limit", "0", "--token-budget", "0", "--max-batch", "4",
                     "--stop-loops", "off", *extra]  # fmt: skip

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
