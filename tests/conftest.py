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
