"""bench/load.py's load generators against the real app: the /v1 and Gradio rows in
bench/RESULTS.md rest on them counting every request, token and first token."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from bench.http_client import Connection, HttpError
from bench.load_generators import run_level


def _generated_tokens(url: str) -> float:
    for line in httpx.get(url + "metrics", timeout=10).text.splitlines():
        if line.startswith("playground_generated_tokens_total "):
            return float(line.split()[1])
    raise AssertionError("no token counter at /metrics")


@pytest.mark.parametrize("client", ["http", "v1"])
def test_a_level_counts_every_request_and_token(live_app, client):
    row = run_level(live_app.url, lambda: _generated_tokens(live_app.url), 2, 2, 8, client)
    assert row["errors"] == []
    assert len(row["ttfts"]) == 4 and all(0 < t < 30 for t in row["ttfts"])
    assert 4 <= row["tokens"] <= 4 * 8  # each request wrote at least one token, at most 8
    assert row["tok_s"] > 0


def test_the_lean_client_reuses_its_connection_and_reports_refusals(live_app):
    async def go():
        c = Connection(live_app.url)
        models = await c.json("GET", "v1/models")
        first = c._rw
        with pytest.raises(HttpError, match=r"HTTP 400.*`prompt` must be a string"):
            await c.json("POST", "v1/completions", {"prompt": 5})
        events = [
            data
            async for _, data in c.events(
                "POST",
                "v1/completions",
                {"prompt": "def add(a, b):\n", "max_tokens": 4, "temperature": 0, "stream": True},
            )
        ]
        reused = c._rw is first
        await c.close()
        return models, events, reused

    models, events, reused = asyncio.run(go())
    assert "tiny-starcoder" in {m["id"] for m in models["data"]}
    assert events[-1] == "[DONE]" and len(events) >= 3  # text chunks, the finish, [DONE]
    assert reused  # one keep-alive connection, also after a 400
