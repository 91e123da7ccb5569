"""Ops endpoints: Prometheus `GET /metrics` and a `GET /healthz` that is ok only when the
engine can generate. Torch-free; works with any Engine (worker, remote or in-process).

Wiring (app/server.py, before gr.mount_gradio_app at "/", which would shadow later routes):

    metrics = EngineMetrics()
    engine = metrics.wrap(engine)          # give the Playground this instrumented engine
    add_ops_routes(api, engine, metrics)
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Iterator

from fastapi import FastAPI
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from model.engine import (
    CancelToken,
    Delta,
    Done,
    Engine,
    Event,
    GenerationParams,
    GenerationRequest,
    ModelInfo,
)
from model.errors import PlaygroundError

TTFT_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60)
RATE_BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000)


class EngineMetrics:
    """All playground metrics, on a registry of their own (so tests can build several apps)."""

    def __init__(self, registry: CollectorRegistry | None = None):
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.tokens = Counter(
            "playground_generated_tokens", "Tokens generated, all requests.", registry=r
        )
        self.requests = Counter(
            "playground_requests", "Finished generations by stop reason.", ["reason"], registry=r
        )
        self.errors = Counter(
            "playground_errors",
            "Failed or refused generations by kind (busy, rate_limit, validation, engine, oom).",
            ["kind"],
            registry=r,
        )
        self.ttft = Histogram(
            "playground_time_to_first_token_seconds",
            "From the request reaching the engine (queue wait included) to its first text.",
            buckets=TTFT_BUCKETS,
            registry=r,
        )
        self.rate = Histogram(
            "playground_tokens_per_second",
            "Per-request decode speed after the first token.",
            buckets=RATE_BUCKETS,
            registry=r,
        )
        self._in_flight = 0
        self._lock = threading.Lock()
        self._engines: Callable[[], Iterable[Engine]] = tuple
        r.register(_EngineCollector(self))

    def wrap(self, engine: Engine) -> InstrumentedEngine:
        return InstrumentedEngine(engine, self)

    def watch(self, engines: Callable[[], Iterable[Engine]]) -> None:
        """Where scrape-time gauges come from: every running engine (one per model)."""
        self._engines = engines

    def _add_in_flight(self, n: int) -> None:
        with self._lock:
            self._in_flight += n


class _EngineCollector:
    """Gauges read at scrape time from the engine's own counters (WorkerEngine.stats())."""

    def __init__(self, metrics: EngineMetrics):
        self.m = metrics

    def collect(self):
        stats: dict = {}
        for engine in self.m._engines():
            for key, value in _stats(engine).items():
                stats[key] = stats.get(key, 0) + value
        depth = GaugeMetricFamily("playground_queue_depth", "Requests waiting for a slot.")
        depth.add_metric([], stats.get("queue_depth", 0))
        active = GaugeMetricFamily(
            "playground_active_requests", "Requests being generated right now."
        )
        active.add_metric([], stats.get("active", self.m._in_flight))
        restarts = CounterMetricFamily(
            "playground_worker_restarts", "Times the model worker process was restarted."
        )
        restarts.add_metric([], stats.get("restarts", 0))
        yield from (depth, active, restarts)


def _stats(engine) -> dict:
    while engine is not None:
        if hasattr(engine, "stats"):
            return engine.stats()
        engine = getattr(engine, "inner", None)
    return {}


class InstrumentedEngine:
    """An Engine that records what passes through it; everything else is delegated."""

    def __init__(self, inner: Engine, metrics: EngineMetrics):
        self.inner = inner
        self.metrics = metrics

    @property
    def info(self) -> ModelInfo:
        return self.inner.info

    def count_tokens(self, text: str) -> int:
        return self.inner.count_tokens(text)

    def tokenize(self, text: str) -> list[int] | None:
        return self.inner.tokenize(text)

    def detokenize(self, ids) -> str | None:
        return self.inner.detokenize(ids)

    def close(self) -> None:
        self.inner.close()

    def __getattr__(self, name):  # health(), stats(), worker_pid...
        return getattr(self.inner, name)

    def stream(self, request: GenerationRequest, cancel: CancelToken) -> Iterator[Event]:
        m = self.metrics
        start = time.perf_counter()
        first = None
        m._add_in_flight(1)
        try:
            for event in self.inner.stream(request, cancel):
                if isinstance(event, Delta) and first is None:
                    first = time.perf_counter()
                    m.ttft.observe(first - start)
                elif isinstance(event, Done):
                    self._record_done(event, first)
                yield event
        except PlaygroundError as exc:
            m.errors.labels(exc.kind).inc()
            raise
        finally:
            m._add_in_flight(-1)

    def _record_done(self, done: Done, first: float | None) -> None:
        m = self.metrics
        m.requests.labels(done.reason).inc()
        m.tokens.inc(done.generated_tokens)
        if done.reason == "error":
            m.errors.labels(done.error_kind or "engine").inc()
        elif first is not None and done.generated_tokens > 1:
            elapsed = time.perf_counter() - first
            if elapsed > 0:
                m.rate.observe((done.generated_tokens - 1) / elapsed)


def probe(engine: Engine, timeout: float = 10.0) -> tuple[bool, str]:
    """Can the engine generate? Its own health() when it has one, else one real token."""
    engine = getattr(engine, "inner", engine)  # probes are not user traffic: skip the metrics
    health = getattr(engine, "health", None)
    if callable(health):
        return health(timeout)
    request = GenerationRequest(" ", GenerationParams(max_new_tokens=1, temperature=0))
    try:
        for event in engine.stream(request, CancelToken()):
            if isinstance(event, Done):
                return (event.reason != "error", event.error or "ok")
    except PlaygroundError as exc:
        return False, exc.message
    return False, "no Done event"


def add_ops_routes(
    app: FastAPI,
    engines: Callable[[], dict[str, Engine]],
    metrics: EngineMetrics,
    *,
    cache_s: float = 2.0,
    page_problem: Callable[[], str | None] = lambda: None,
) -> None:
    """Mount GET /metrics and GET /healthz (503 with a reason when the engine cannot generate,
    or when `page_problem` names one: the page's own event queue has stopped).

    The health answer is cached for `cache_s` so a tight probe loop cannot load the model."""
    cache: dict = {"at": -1e9, "ok": False, "detail": ""}
    lock = threading.Lock()

    @app.get("/healthz", include_in_schema=False)
    def healthz():
        with lock:
            if time.monotonic() - cache["at"] > cache_s:
                cache["ok"], cache["detail"] = probe_all(engines())
                cache["at"] = time.monotonic()
                problem = page_problem()
                if problem:
                    cache["ok"], cache["detail"] = False, problem
            ok, detail = cache["ok"], cache["detail"]
        loaded = engines()
        body = {"status": "ok" if ok else "unavailable", "models": sorted(loaded),
                "engines": {k: runs_on(e.info) for k, e in sorted(loaded.items())}}  # fmt: skip
        if not ok:
            body["detail"] = detail
        return JSONResponse(body, status_code=200 if ok else 503)

    @app.get("/metrics", include_in_schema=False)
    def metrics_route():
        from prometheus_client import generate_latest

        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)


def runs_on(info: ModelInfo) -> dict:
    """What a model runs on, for /healthz and /v1/models: device, dtype (weights and KV cache)
    and, for a model in this machine's worker, its torch CPU threads (TORCH_THREADS) and
    whether that count is fixed or follows the other processes' load ("auto"), and what computes
    its linear layers on a CPU ("kernel", "onednn", "plain") and the rest of its decoder layers
    ("layer.c", "transformers")."""
    facts = {"device": info.device, "dtype": info.dtype}
    if info.threads:
        facts["threads"] = info.threads
    if info.threads_policy:
        facts["threads_policy"] = info.threads_policy
    if info.linear:
        facts["linear"] = info.linear
    if info.layers:
        facts["layers"] = info.layers
    return facts


def probe_all(engines: dict[str, Engine]) -> tuple[bool, str]:
    """Healthy when at least one model is up and every started model can generate."""
    if not engines:
        return False, "no model has finished loading yet"
    for model_id, engine in engines.items():
        ok, detail = probe(engine)
        if not ok:
            return False, f"{model_id}: {detail}"
    return True, "ok"
