"""A share database that is down (PostgreSQL restarting, say) is a clear "try again", never a
500: with PostgreSQL restarted under load, every write and page view during the outage was a 500
(checks/chaos.py). Real psycopg against a loopback port where no server listens."""

from __future__ import annotations

import socket

import httpx
import pytest

from app.shares.store import Store
from model.errors import PlaygroundError
from tests.share_helpers import LiveServer, share_app


@pytest.fixture
def down_store():
    with socket.socket() as s:  # a free port: nothing listens there
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    store = Store(
        f"postgresql://postgres@127.0.0.1:{port}/playground",
        writes_per_window=30,
        auto_migrate=False,
    )
    yield store
    store.close()


def test_reads_and_writes_say_the_store_is_unavailable(down_store):
    for call in (
        lambda: down_store.get("AbCdEfGhIjKlMnOp"),
        lambda: down_store.create(mode="completion", prompt="", output="x = 1", client_id="a"),
        lambda: down_store.delete("AbCdEfGhIjKlMnOp", "token"),
    ):
        with pytest.raises(PlaygroundError) as err:
            call()
        assert err.value.kind == "busy" and "try again" in err.value.message


def test_pages_and_the_api_answer_503_with_a_message(down_store):
    with LiveServer(share_app(down_store)) as server:
        page = httpx.get(f"{server.url}/s/AbCdEfGhIjKlMnOp")
        api = httpx.post(
            f"{server.url}/api/shares", json={"mode": "completion", "prompt": "", "output": "x = 1"}
        )
    assert page.status_code == 503 and "Try again in a minute" in page.text
    assert page.headers["retry-after"] == "30"
    assert api.status_code == 503 and "unavailable" in api.json()["error"]
