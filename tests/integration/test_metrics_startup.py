"""/metrics counts every engine from its first request, also one started before the app was
built (app.py warms the default models while the web app is assembled)."""

from __future__ import annotations

import re

import httpx
from gradio_client import Client

from app.server import BackgroundServer, build_app, build_engines
from app.settings import Settings


def test_a_model_warmed_before_the_app_is_built_is_counted(attribution_index, tmp_path):
    argv = ["--data-dir", str(tmp_path), "--port", "0", "--device", "cpu", "--max-batch", "2",
            "--model", "tiny-starcoder", "--rate-limit", "0", "--token-budget", "0"]  # fmt: skip
    settings = Settings.load(argv, env={})
    engines = build_engines(settings)
    try:
        # As app.py does: the worker starts in the background while the app is built.
        warming = engines.warm(["tiny-starcoder"])
        built = build_app(settings, engines, attribution_index)
        warming.join(120)
        with BackgroundServer(built.fastapi) as server:
            client = Client(server.url, verbose=False)
            client.predict(prompt="def f(", max_new_tokens=8, temperature=0, api_name="/complete")
            text = httpx.get(f"{server.url}metrics").text
    finally:
        engines.close()
    tokens = re.search(r"^playground_generated_tokens_total (\S+)$", text, re.M)
    assert tokens and float(tokens.group(1)) > 0, text[:500]
    assert re.search(r'^playground_requests_total\{reason="\w+"\} 1\.0$', text, re.M), text[:2000]
