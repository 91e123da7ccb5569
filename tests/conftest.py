"""Shared fixtures. Real parts only: the PostgreSQL server comes from .ci/run (PG_TEST_URL)."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture(scope="session")
def pg_url() -> str:
    """URL of the real PostgreSQL server started by .ci/run.

    In CI a missing server is a failure, not a skip, so these tests can never silently pass.
    """
    url = os.environ.get("PG_TEST_URL")
    if not url:
        if os.environ.get("CI"):
            pytest.fail("PG_TEST_URL is not set: .ci/run should have started PostgreSQL")
        pytest.skip("PG_TEST_URL not set (run .ci/postgres.sh start DIR to get one)")
    return url


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory) -> str:
    """The embedded tiny-starcoder checkpoint; a random GPTBigCode stands in until it exists."""
    from app.settings import EMBEDDED_MODEL

    if os.path.exists(os.path.join(EMBEDDED_MODEL, "config.json")):
        return EMBEDDED_MODEL
    from tests.random_model import build_random_model

    return str(build_random_model(tmp_path_factory.mktemp("random-starcoder")))


@pytest.fixture(scope="session")
def engine(model_dir):
    from model.engines.local import LocalEngine

    return LocalEngine.load(model_dir, device="cpu")


ATTRIBUTION_DOCS = 60  # a slice of the real corpus keeps the session's index build short


@pytest.fixture(scope="session")
def attribution_index(tmp_path_factory):
    """A real attribution index over the first training files of the model's corpus manifest."""
    import json
    from pathlib import Path

    from app.attribution import ensure_default_index
    from app.settings import Settings

    manifest = json.loads(
        Path(Settings.load([], env={}).corpus_manifest).read_text(encoding="utf-8")
    )
    train = [d for d in manifest["documents"] if d["split"] == "train"][:ATTRIBUTION_DOCS]
    folder = tmp_path_factory.mktemp("attribution")
    subset = folder / "corpus_manifest.json"
    subset.write_text(json.dumps({**manifest, "documents": train}), encoding="utf-8")
    return ensure_default_index(folder / "index.sqlite", subset)


@pytest.fixture(scope="session")
def live_app(attribution_index, tmp_path_factory):
    """The real app as `python app.py` builds it (worker processes, Gradio, routes), served by
    uvicorn on a free loopback port, with tiny-starcoder the default of every mode."""
    # Every test talks from 127.0.0.1, and limits are keyed on the address: no limits here
    # (tests/integration/test_security.py checks them on an app of its own).
    # Loops are not stopped here: several tests need a long greedy run, and tiny-starcoder's
    # counting prompts loop (the rule itself: tests/unit/test_loops.py, test_loop_stop.py).
    argv = ["--model", "tiny-starcoder", "--rate-limit", "0", "--token-budget", "0",
            "--share-rate", "100000", "--stop-loops", "off"]  # fmt: skip
    yield from _serve(argv, attribution_index, tmp_path_factory)


@pytest.fixture(scope="module")
def strict_app(attribution_index, tmp_path_factory):
    """The real app with tight limits: one generation at a time, nothing may wait, 4
    generations and 2 shares per client per minute."""
    argv = ["--model", "tiny-starcoder", "--max-queue", "0", "--rate-limit", "4",
            "--share-rate", "2", "--max-batch", "1", "--stop-loops", "off"]  # fmt: skip
    yield from _serve(argv, attribution_index, tmp_path_factory)


def _serve(argv, attribution_index, tmp_path_factory):
    from app.server import BackgroundServer, build_app, build_engines
    from app.settings import Settings

    data = tmp_path_factory.mktemp("data")
    argv = ["--data-dir", str(data), "--port", "0", "--device", "cpu", "--max-batch", "4", *argv]
    engines = build_engines(Settings.load(argv, env={}))
    try:
        built = build_app(Settings.load(argv, env={}), engines, attribution_index)
        with BackgroundServer(built.fastapi) as server:
            built.url = server.url
            built.data_dir = str(data)
            yield built
    finally:
        engines.close()


@pytest.fixture(scope="session")
def client(live_app):
    from gradio_client import Client

    # download_files=False: gradio_client would otherwise treat any {"path": ...} result
    # (as /attribute and /search return) as a file to download. The README says the same.
    return Client(live_app.url, verbose=False, download_files=False)
