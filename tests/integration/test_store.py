"""The share store on SQLite and on a real PostgreSQL server: the same tests for both."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa

from app.shares.store import (
    LATEST_VERSION,
    Limits,
    RateLimited,
    RateLimiter,
    Store,
    migrate,
    normalize_url,
)
from model.errors import PlaygroundError
from tests import share_helpers

db_url = share_helpers.db_url  # fixtures shared with the other share tests
store = share_helpers.store

FIM_OUT = "def add(a, b):\n    return a + b\n"


def _make(store: Store, **kw):
    args = {"mode": "completion", "prompt": "def f(", "output": "def f(x): ...", "client_id": "c"}
    return store.create(**{**args, **kw})


def test_round_trip_keeps_every_field(store):
    made = store.create(
        mode="fim",
        prompt="def add(a, b):\n    <FILL_HERE>\n",
        output=FIM_OUT,
        parameters={"temperature": 0.2, "max_new_tokens": 256, "stop": ["\n\n"], "lang": "ünï"},
        model="bigcode/tiny_starcoder_py",
        fim={"prefix": "def add(a, b):\n    ", "middle": "return a + b", "suffix": "\n"},
        spans=[{"start": 0, "end": 14, "source": "repo/a.py", "score": 0.9}],
        client_id="c",
    )
    assert made.created and made.delete_token
    got = store.get(made.share.id)
    assert got == made.share
    assert got.output[got.fim.middle_start : got.fim.middle_end] == "return a + b"
    assert got.parameters["stop"] == ["\n\n"] and got.parameters["lang"] == "ünï"
    assert got.spans == [{"start": 0, "end": 14, "source": "repo/a.py", "score": 0.9}]
    assert got.created_at.tzinfo == UTC
    assert abs(got.created_at - datetime.now(UTC)) < timedelta(minutes=1)


def test_ids_are_random_url_safe_and_at_least_64_bits(store):
    ids = {_make(store, output=f"x = {i}").share.id for i in range(20)}
    assert len(ids) == 20
    # 16 base64url characters = 96 bits
    assert all(re.fullmatch(r"[A-Za-z0-9_-]{16,}", i) for i in ids)


def test_identical_content_gets_a_link_of_its_own(store):
    # Handing back the first share's id would give its link to anyone who shares the same text.
    first = _make(store, parameters={"a": 1, "b": 2})
    again = _make(store, parameters={"b": 2, "a": 1}, client_id="someone else")
    assert again.share.id != first.share.id and again.created
    assert again.delete_token and again.delete_token != first.delete_token
    store.delete(again.share.id, again.delete_token)  # one creator's delete leaves the other's
    assert store.get(first.share.id) is not None and store.get(again.share.id) is None


def test_delete_needs_the_right_token_and_only_its_hash_is_stored(store):
    made = _make(store)
    sid, token = made.share.id, made.delete_token
    with pytest.raises(PlaygroundError) as wrong:
        store.delete(sid, token[:-1] + ("A" if token[-1] != "A" else "B"))
    assert wrong.value.kind == "forbidden"
    assert store.get(sid) is not None
    with store.engine.connect() as conn:
        row = conn.exec_driver_sql("SELECT * FROM shares").one()
    assert token not in [str(v) for v in row]
    assert store.token_matches(sid, token) and not store.token_matches(sid, "nope")

    store.delete(sid, token)
    assert store.get(sid) is None
    with pytest.raises(PlaygroundError) as gone:
        store.delete(sid, token)
    assert gone.value.kind == "not_found"


def test_missing_and_malformed_ids_are_not_found(store):
    assert store.get("A" * 16) is None
    assert store.get("../../etc/passwd") is None
    assert store.get("") is None


@pytest.mark.parametrize(
    "kwargs, field, words",
    [
        ({"prompt": "x" * 1001}, "prompt", ["`prompt`", "1,000 bytes", "1,001 bytes"]),
        ({"output": "é" * 501}, "output", ["`output`", "1,000 bytes", "1,002 bytes"]),
        ({"mode": "chat"}, "mode", ["`mode`", "completion, fim, assistant", "'chat'"]),
        ({"prompt": "a\x00b"}, "prompt", ["NUL", "position 1"]),
        ({"output": "\ud800"}, "output", ["`output`", "surrogate"]),
        ({"prompt": "", "output": ""}, "output", ["both empty"]),
        ({"parameters": [1]}, "parameters", ["JSON object", "list"]),
        ({"parameters": {"t": float("nan")}}, "parameters", ["not valid JSON"]),
        ({"parameters": {"k": "v" * 300}}, "parameters", ["256 bytes"]),
        ({"model": "m" * 51}, "model", ["50", "51 characters"]),
        ({"fim": {"middle_start": 0, "middle_end": 1}}, "fim", ["only for mode 'fim'"]),
        ({"mode": "fim", "fim": {"middle_start": 3, "middle_end": 99}}, "fim", ["99", "<= 13"]),
        ({"mode": "fim", "fim": {"prefix": "a", "middle": "b", "suffix": "c"}}, "fim", ["equal"]),
        ({"mode": "fim", "fim": {"hole": 1}}, "fim", ["hole"]),
        ({"spans": [{"start": 5, "end": 2}]}, "spans", ["spans[0]", "<= 13"]),
        ({"spans": [{"start": 0}]}, "spans", ["spans[0]"]),
        ({"spans": [{"start": 0, "end": 1}] * 4}, "spans", ["at most 3", "Given: 4"]),
    ],
)
def test_bad_input_is_refused_with_a_message_naming_field_limit_and_value(
    db_url,
    kwargs,
    field,
    words,
):
    limits = Limits(
        max_prompt_bytes=1000,
        max_new_text_bytes=0,
        max_parameters_bytes=256,
        max_model_chars=50,
        max_spans=3,
    )
    store = Store(db_url, writes_per_window=30, limits=limits)
    with pytest.raises(PlaygroundError) as err:
        _make(store, **kwargs)
    assert err.value.field == field and err.value.kind == "validation"
    for word in words:
        assert word in err.value.message
    with store.engine.connect() as conn:
        assert conn.exec_driver_sql("SELECT COUNT(*) FROM shares").scalar() == 0
    store.close()


def test_write_rate_is_limited_per_client(db_url):
    now = [1000.0]
    store = Store(db_url, rate_limiter=RateLimiter(3, 60, clock=lambda: now[0]))
    for i in range(3):
        _make(store, output=f"x = {i}")
    with pytest.raises(RateLimited) as err:
        _make(store, output="x = 3")
    assert err.value.kind == "rate_limit" and "3 per 60 s" in err.value.message
    assert 59 <= err.value.retry_after_s <= 60
    _make(store, output="x = 3", client_id="another client")  # others are not affected
    now[0] += 61
    _make(store, output="x = 4")  # the window slid
    store.close()


def test_fresh_database_is_at_the_latest_version(db_url):
    store = Store(db_url, writes_per_window=30)
    assert store.schema_version() == LATEST_VERSION == 3
    assert {"shares", "schema_version"} <= set(sa.inspect(store.engine).get_table_names())
    store.close()
    again = Store(db_url, writes_per_window=30)  # reopening is a no-op, not a second migration
    with again.engine.connect() as conn:
        assert conn.exec_driver_sql("SELECT COUNT(*) FROM schema_version").scalar() == 1
    again.close()


def test_upgrade_from_version_1_keeps_old_shares(db_url):
    engine = sa.create_engine(normalize_url(db_url))
    assert migrate(engine, target=1) == 1
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO shares (id, created_at, mode, model, parameters, prompt, output,"
                " content_hash, delete_token_hash) VALUES ('OldShareOldShare', :t, 'completion',"
                " NULL, '{\"temperature\": 0.2}', 'def old(', 'def old(): pass', 'h1', 'x')"
            ),
            {"t": datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC)},
        )
    engine.dispose()

    store = Store(db_url, writes_per_window=30)
    assert store.schema_version() == 3
    old = store.get("OldShareOldShare")
    assert old.output == "def old(): pass" and old.parameters == {"temperature": 0.2}
    assert old.fim is None and old.spans == []
    assert old.created_at == datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC)
    fim = _make(store, mode="fim", output="ab", fim={"middle_start": 1, "middle_end": 2})
    assert store.get(fim.share.id).fim.middle_start == 1
    store.close()


def test_a_database_from_a_newer_release_is_refused(db_url):
    Store(db_url, writes_per_window=30).close()
    engine = sa.create_engine(normalize_url(db_url))
    with engine.begin() as conn:
        conn.exec_driver_sql("UPDATE schema_version SET version = 99")
    engine.dispose()
    with pytest.raises(RuntimeError, match="schema v99, newer than this code"):
        Store(db_url, writes_per_window=30)


def test_sqlite_runs_in_wal_with_full_sync_and_a_busy_timeout(tmp_path):
    store = Store(
        f"sqlite:///{tmp_path / 'sub' / 'p.db'}", writes_per_window=30, busy_timeout_ms=4321
    )
    with store.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 2  # FULL
        assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == 4321
    store.close()


def test_postgres_urls_in_heroku_style_use_psycopg3():
    assert normalize_url("postgres://u@h/db") == "postgresql+psycopg://u@h/db"
    assert normalize_url("postgresql://u@h/db") == "postgresql+psycopg://u@h/db"
    assert normalize_url("sqlite:///x.db") == "sqlite:///x.db"
