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
    from model.local import LocalEngine

    return LocalEngine.load(model_dir, device="cpu")


@pytest.fixture(scope="session")
def live_app(engine, tmp_path_factory):
    """The real app (Gradio + routes) served by uvicorn on a free loopback port."""
    from app.server import BackgroundServer, build_app
    from app.settings import Settings

    data = tmp_path_factory.mktemp("data")
    settings = Settings.load(["--data-dir", str(data), "--port", "0"], env={})
    built = build_app(settings, engine)
    with BackgroundServer(built.fastapi) as server:
        built.url = server.url
        yield built


@pytest.fixture(scope="session")
def client(live_app):
    from gradio_client import Client

    return Client(live_app.url, verbose=False)
