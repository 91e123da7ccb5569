"""Assembles the web app: Playground services, Gradio UI and plain HTTP routes on one FastAPI."""

from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import gradio as gr
import uvicorn
from fastapi import FastAPI

from app.attribution import AttributionIndex, ensure_default_index
from app.limits import Limits
from app.links import PublicLinks
from app.metrics import EngineMetrics, add_ops_routes
from app.parameters import SCHEMA, Schema
from app.render import style_css
from app.services.generate import Generations
from app.services.playground import Playground
from app.services.search import Search
from app.services.shares import Shares
from app.settings import EMBEDDED_MODEL, Settings
from app.shares.store import Store
from app.web.access import AccessGuard
from app.web.guard import SPACE_FRAME_ANCESTORS, EdgeGuard
from app.web.handlers import Handlers
from app.web.openai_api import mount_openai_routes
from app.web.share_routes import mount_share_routes
from app.web.ui import build_ui
from compat import gradio_session
from compat.gradio_queue import GradioRouteChecks, queue_stopped, tune_queue
from model.engine import Engine
from model.engines.factory import build_engine
from model.engines.pool import EnginePool
from model.errors import PlaygroundError
from model.paths import ROOT
from model.prompts.templates import TaPrompt
from model.registry import (
    TINY_STARCODER,
    ModelSpec,
    Registry,
    parse_remote_defaults,
    remote_spec,
)

log = logging.getLogger(__name__)

STATIC = ROOT / "static"


@dataclass
class PlaygroundApp:
    fastapi: FastAPI
    blocks: gr.Blocks
    handlers: Handlers
    store: Store


def build_engines(settings: Settings) -> EnginePool:
    """The models on offer, each served by its own worker process, started on first use.

    With ENGINE_URL there is one model: the remote server's."""
    # Every engine setting, to either kind of engine (a remote one ignores the worker's).
    common = {"device": settings.device, "hf_token": settings.hf_token,
              "log_level": settings.log_level.upper(), "max_batch": settings.max_batch,
              "max_queue": settings.max_queue, "data_dir": settings.data_dir,
              "kv_cache_mb": settings.kv_cache_mb, "torch_threads": settings.torch_threads,
              "dtype": settings.dtype}  # fmt: skip
    if settings.engine_url:
        return _remote_engines(settings, common)
    registry = Registry.build(settings.data_dir, settings.model)

    def start(spec: ModelSpec) -> Engine:
        # Packaged models are resolved (converted) inside the worker, which may import torch.
        model = spec.id if spec.source == "package" else spec.location
        return build_engine(model=model, **common)

    return EnginePool(registry, start)


def _remote_engines(settings: Settings, common: dict) -> EnginePool:
    """The ENGINE_URL server's model. One the registry knows (by the name it is served as, its
    weights' folder or MODEL_ID) keeps its defaults, stops and tokenizer; MODEL_ID, when set,
    names the tokenizer (a folder, a Hub id or one of our ids)."""
    known = Registry.build(settings.data_dir)
    try:
        defaults = parse_remote_defaults(settings.engine_model_defaults)
    except PlaygroundError as exc:
        raise SystemExit(exc.message) from None
    named = settings.model if settings.model != EMBEDDED_MODEL else None
    tokenizer = known.tokenizer_source(known.get(named)) if named in known else named

    def tokenizer_for(names) -> str | None:
        spec = known.match(names)
        return known.tokenizer_source(spec) if spec is not None else None

    remote = build_engine(
        model=tokenizer,
        engine_url=settings.engine_url,
        engine_model=settings.engine_model,
        engine_api_key=settings.engine_api_key,
        tokenizer_for=tokenizer_for,
        **common,
    )
    match = known.match([named or "", *remote.names])
    spec = remote_spec(match, remote.info, settings.engine_url, defaults)
    log.info(
        "ENGINE_URL %s serves %s: %s",
        settings.engine_url,
        remote.model,
        f"known as {match.id}" if match else "generic defaults",
    )
    return EnginePool.single(remote, data_dir=settings.data_dir, spec=spec)


def open_attribution(settings: Settings) -> AttributionIndex:
    """The attribution index; built from the model's corpus manifest at first start (logged)."""
    url = settings.resolved_index_url()
    if "://" not in url:
        Path(url).parent.mkdir(parents=True, exist_ok=True)
    return ensure_default_index(settings.resolved_index_url(), settings.corpus_manifest)


def indexed_model(settings: Settings) -> str | None:
    """Whose training data the attribution index holds, when we know: the default index is built
    from the embedded model's corpus manifest."""
    default = Settings.load([], env={})
    if settings.index_url is None and settings.corpus_manifest == default.corpus_manifest:
        return TINY_STARCODER
    return None


def build_app(
    settings: Settings,
    engines: EnginePool,
    attribution: AttributionIndex | None = None,
    schema: Schema = SCHEMA,
) -> PlaygroundApp:
    """The whole app; `schema`, the request schema every edge derives from (app/parameters.py)."""
    gradio_session.install()
    # Gradio's file cache (a copy of every download) defaults to /tmp/gradio and is never
    # swept: keep it in the data folder, where the downloads sweep removes old files. An
    # operator's own GRADIO_TEMP_DIR wins; in one process the first app's folder serves all.
    os.environ.setdefault("GRADIO_TEMP_DIR", str(Path(settings.data_dir).resolve() / "gradio"))
    metrics = EngineMetrics()
    engines.wrap(metrics.wrap)
    metrics.watch(lambda: engines.loaded().values())
    ta = TaPrompt.load(settings.ta_prompt)
    limits = Limits(max_prompt_bytes=settings.max_prompt_bytes)
    playground = Playground(
        engines,
        ta,
        limits,
        rate_limit_per_min=settings.rate_limit,
        fim_candidates=settings.fim_candidates,
        token_budget_per_min=settings.token_budget,
        max_scored_tokens=settings.max_scored_tokens,
        stop_loops=settings.stop_loops == "on",
    )
    Path(settings.data_dir).mkdir(parents=True, exist_ok=True)
    store = Store(
        settings.resolved_database_url(), limits=limits, writes_per_window=settings.share_rate
    )
    links = PublicLinks.from_settings(settings)
    handlers = Handlers(
        Generations(playground, settings.trusted_proxy_header),
        Shares(store, links, engines.registry, schema),
        Search(attribution, indexed_model(settings)),
        downloads_dir=str(Path(settings.data_dir) / "downloads"),
    )
    blocks = build_ui(handlers)
    cache = Path(blocks.GRADIO_CACHE).resolve()
    if cache.is_relative_to(Path(settings.data_dir).resolve()):
        handlers.downloads.also_sweep.append(cache)
    # Requests flow on to the engine, which batches up to max_batch and queues max_queue more
    # (with positions and a clear "busy"); Gradio's own queue only needs to hold the overflow.
    model_slots = settings.max_batch + settings.max_queue
    blocks.queue(max_size=model_slots, default_concurrency_limit=model_slots)
    tune_queue(blocks)

    api = FastAPI(title="StarCoder Playground", docs_url=None, redoc_url=None)
    api.add_middleware(GradioRouteChecks, blocks=blocks)
    api.add_middleware(
        AccessGuard,
        api_keys=settings.key_list(),
        metrics_token=settings.metrics_token,
        secure_cookie=(links.public_url or "").startswith("https://"),
        trusted_proxy_header=settings.trusted_proxy_header,
    )
    api.add_middleware(  # added last, so it runs first: before everything else, Gradio too
        EdgeGuard,
        max_body_bytes=settings.max_body_bytes or limits.max_body_bytes,
        trusted_origins=links.origins(),
        host_allowed=links.host_allowed,
        body_timeout_s=settings.body_timeout,
        frame_ancestors=SPACE_FRAME_ANCESTORS if settings.space_id else None,
    )
    # /healthz and /metrics, before Gradio takes "/"
    add_ops_routes(api, engines.loaded, metrics, page_problem=lambda: _page_problem(blocks))
    # Before Gradio: mounted at "/", it would otherwise answer every path.
    mount_openai_routes(api, handlers.generate, handlers.search, schema)
    mount_share_routes(
        api,
        store,
        links=links,
        client_ip_header=settings.trusted_proxy_header,
        max_body_bytes=settings.max_body_bytes,
    )
    css = STATIC.joinpath("style.css").read_text(encoding="utf-8") + "\n" + style_css()
    gr.mount_gradio_app(
        api,
        blocks,
        path="/",
        css=css,
        footer_links=["api"],
        ssr_mode=False,
        enable_monitoring=False,
        # Only our own gr.Error messages reach users; other exceptions' text (Gradio's or
        # pydantic's internals) stays in the log.
        show_error=False,
    )
    return PlaygroundApp(api, blocks, handlers, store)


def uvicorn_config(app: FastAPI, **kwargs) -> uvicorn.Config:
    """How every server of the app is configured (tests and benchmarks run the same)."""
    # uvicorn's default rewrites the client address from X-Forwarded-For when the peer is
    # loopback, so any local client could pose as any address and escape its rate limits. The
    # app reads the one header an operator trusts itself (TRUSTED_PROXY_HEADER), or the peer.
    return uvicorn.Config(app, proxy_headers=False, **kwargs)


def _page_problem(blocks) -> str | None:
    if queue_stopped(blocks):
        return "the page's event queue has stopped: page events and API calls are refused"
    return None


class BackgroundServer:
    """uvicorn in a thread: used by tests and benchmarks to run the real app in-process."""

    def __init__(self, app: FastAPI, host: str = "127.0.0.1", port: int = 0):
        config = uvicorn_config(app, host=host, port=port, log_level="warning", lifespan="on")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> BackgroundServer:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("server did not start")
            time.sleep(0.05)
        return self

    @property
    def url(self) -> str:
        sock = self.server.servers[0].sockets[0]
        host, port = sock.getsockname()[:2]
        return f"http://{host}:{port}/"

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


SHUTDOWN_GRACE_SECONDS = 5


def serve(app: FastAPI, settings: Settings, startup_check=None) -> bool:
    """Serve until stopped. `startup_check` runs beside the server (e.g. waiting for the
    default model); if it raises PlaygroundError the server stops and we return False."""
    # Every open page holds a heartbeat stream that never ends by itself: without a deadline
    # SIGTERM (docker stop, a Space restart) waited for them forever and ended in SIGKILL.
    config = uvicorn_config(
        app,
        host=settings.host,
        port=settings.port,
        log_level="info",
        timeout_graceful_shutdown=SHUTDOWN_GRACE_SECONDS,
    )
    server = uvicorn.Server(config)
    failed: list[PlaygroundError] = []

    def check() -> None:
        try:
            startup_check()
        except PlaygroundError as exc:
            log.error("%s", exc.message)
            failed.append(exc)
            server.should_exit = True

    if startup_check is not None:
        threading.Thread(target=check, name="startup-check", daemon=True).start()
    log.info("serving on http://%s:%d", settings.host, settings.port)
    server.run()
    return not failed
