"""/healthz (app/metrics.py add_ops_routes) over a FakeEngine: the page's own queue counts."""

from __future__ import annotations

import gradio as gr
from fastapi import FastAPI
from fastapi.testclient import TestClient

from app.metrics import EngineMetrics, add_ops_routes
from app.server import _page_problem
from tests.fakes import FakeEngine


def test_a_stopped_page_queue_makes_the_server_unhealthy():
    """Gradio stops a Blocks' queue for good when its loop ends, and then refuses every page
    event with 503 while everything else answers: a proxy must see it in /healthz."""
    with gr.Blocks() as blocks:
        gr.Markdown("x")
    blocks.queue()
    metrics = EngineMetrics()
    api = FastAPI()
    engine = FakeEngine(reply="ok")
    add_ops_routes(
        api, lambda: {"m": engine}, metrics, cache_s=0, page_problem=lambda: _page_problem(blocks)
    )
    http = TestClient(api)
    assert http.get("/healthz").status_code == 200
    blocks._queue.stopped = True
    got = http.get("/healthz")
    assert got.status_code == 503
    assert got.json()["detail"].startswith("the page's event queue has stopped")
