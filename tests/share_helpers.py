"""Fixtures and helpers shared by the share tests: one store per test on SQLite and PostgreSQL,
and a real uvicorn server on a free loopback port."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
import sqlalchemy as sa
from fastapi import FastAPI

from app.server import BackgroundServer
from app.shares.store import Store
from app.web.share_routes import mount_share_routes

BACKENDS = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]


@contextmanager
def fresh_db_url(backend: str, tmp_path, request) -> Iterator[str]:
    """A URL to an empty database: a new SQLite file, or a new PostgreSQL schema (dropped after)."""
    if backend == "sqlite":
        yield f"sqlite:///{tmp_path / 'playground.db'}"
        return
    base = request.getfixturevalue("pg_url")
    schema = f"t_{secrets.token_hex(6)}"
    admin = sa.create_engine(base, poolclass=sa.pool.NullPool)
    with admin.begin() as conn:
        conn.exec_driver_sql(f"CREATE SCHEMA {schema}")
    try:
        sep = "&" if "?" in base else "?"
        yield f"{base}{sep}options=-csearch_path%3D{schema}"
    finally:
        with admin.begin() as conn:
            conn.exec_driver_sql(f"DROP SCHEMA {schema} CASCADE")
        admin.dispose()


@pytest.fixture(params=BACKENDS)
def db_url(request, tmp_path) -> Iterator[str]:
    with fresh_db_url(request.param, tmp_path, request) as url:
        yield url


@pytest.fixture
def store(db_url) -> Iterator[Store]:
    s = Store(db_url, writes_per_window=10_000)
    yield s
    s.close()


class LiveServer(BackgroundServer):
    """The app's own background uvicorn; `url` without the trailing slash."""

    @property
    def url(self) -> str:
        return super().url.rstrip("/")


def share_app(store: Store, **kwargs) -> FastAPI:
    app = FastAPI()
    mount_share_routes(app, store, **kwargs)
    return app
