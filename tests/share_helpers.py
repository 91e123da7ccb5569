"""Fixtures and helpers shared by the share tests: one store per test on SQLite and PostgreSQL,
and a real uvicorn server on a free loopback port."""

from __future__ import annotations

import secrets
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
import sqlalchemy as sa
import uvicorn
from fastapi import FastAPI

from app.share_routes import mount_share_routes
from app.store import Store

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


class LiveServer:
    """uvicorn serving `app` in a background thread on 127.0.0.1:<free port>."""

    def __init__(self, app: FastAPI):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]})

    def __enter__(self) -> LiveServer:
        self.thread.start()
        deadline = time.monotonic() + 15
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.01)
        return self

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(10)
        self.sock.close()


def share_app(store: Store, **kwargs) -> FastAPI:
    app = FastAPI()
    mount_share_routes(app, store, **kwargs)
    return app
