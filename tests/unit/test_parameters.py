"""The request schema (app/parameters.py) is the one place a generation parameter is declared:
adding one there gives it a control on the page, an argument of the named API, a `/v1` field,
a place in share records and a README row, with the same validation messages everywhere."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from app.parameters import SCHEMA, Parameter, names
from app.server import build_app
from app.settings import Settings
from model.engine import GenerationParams
from tests.fakes import FakeEngine, fake_pool

README = Path(__file__).resolve().parents[2] / "README.md"


@dataclass(frozen=True)
class TopKParams(GenerationParams):
    """An engine that has learnt one more setting: the field the new parameter fills in."""

    top_k: int = 0


TOP_K = Parameter(
    "top_k",
    "int",
    "Top-k",
    "sample among this many likeliest tokens; 0: all",
    lo=0,
    hi=200,
    default=0,
)


def _app(tmp_path, schema):
    engine = FakeEngine("    return a + b\n")
    settings = Settings.load(["--data-dir", str(tmp_path), "--rate-limit", "0"], env={})
    return build_app(settings, fake_pool(engine), None, schema), engine


@pytest.fixture(params=["declared", "not declared"])
def variant(request, tmp_path):
    """The app built with the schema plus `top_k`, and with the schema as shipped."""
    extended = request.param == "declared"
    schema = SCHEMA.with_parameter(TOP_K, TopKParams) if extended else SCHEMA
    built, engine = _app(tmp_path, schema)
    return extended, schema, built, engine


def test_the_readme_table_is_the_schemas():
    text = README.read_text(encoding="utf-8")
    start = text.index("<!-- parameters")
    block = text[text.index("\n", start) + 1 : text.index("<!-- /parameters -->")].strip()
    assert block == SCHEMA.readme_table(), "run `python -m app.parameters` into the README"


def test_a_parameter_declared_once_reaches_every_edge(variant):
    extended, schema, built, engine = variant
    # The page: a control per tab, after the shipped ones, in the schema's order.
    ids = {getattr(b, "elem_id", None) for b in built.blocks.blocks.values()}
    for mode in ("completion", "fim", "assistant"):
        assert (f"{mode}-top-k" in ids) is extended
        assert f"{mode}-temperature" in ids
    # The named API's published signature.
    info = built.blocks.get_api_info()["named_endpoints"]["/complete"]["parameters"]
    assert ("top_k" in [p["parameter_name"] for p in info]) is extended
    # The page's handler passes it to the engine, and the share record keeps it.
    handlers = built.handlers
    controls = {**handlers.defaults(None, "completion"), "top_k": 7}
    values = [controls[name] for name in names(schema.page)]
    *_, final = handlers.ui_code("completion", "def add(a, b):\n", None, *values)
    record = final[4]
    assert ("top_k" in record["parameters"]) is extended
    if extended:
        assert engine.requests[-1].params.top_k == 7 and record["parameters"]["top_k"] == 7
        assert handlers.schema.form(record["parameters"], None, "completion")["top_k"] == 7
    # /v1: honoured when declared, refused by name when not.
    with TestClient(built.fastapi) as client:
        body = {"prompt": "def add(a, b):\n", "max_tokens": 8, "top_k": 5}
        r = client.post("/v1/completions", json=body)
        if extended:
            assert r.status_code == 200, r.text
            assert engine.requests[-1].params.top_k == 5
            bad = client.post("/v1/completions", json={**body, "top_k": 500})
            assert bad.status_code == 400
            assert bad.json()["error"]["message"] == "`top_k` must be in [0, 200]; got 500."
        else:
            assert r.status_code == 400
            assert r.json()["error"]["message"].startswith("`top_k` is not a field of")
    # The README's table.
    assert ("| `top_k` |" in schema.readme_table()) is extended


def test_v1_refusals_name_the_field_as_the_caller_sent_it(tmp_path):
    built, _ = _app(tmp_path, SCHEMA)
    with TestClient(built.fastapi) as client:
        r = client.post("/v1/completions", json={"prompt": "x", "max_tokens": 0})
        assert r.json()["error"]["message"] == "`max_tokens` must be in [1, 8192]; got 0."
        assert r.json()["error"]["param"] == "max_tokens"
        r = client.post(
            "/v1/chat/completions",
            json={"messages": [{"role": "user", "content": "hi"}], "max_completion_tokens": "9"},
        )
        assert r.json()["error"]["message"] == "`max_completion_tokens` must be a number; got str."
        # An overflow found deep in the services is in the caller's words too.
        r = client.post("/v1/completions", json={"prompt": "x" * 5000, "max_tokens": 8})
        message = r.json()["error"]["message"]
        assert "`max_tokens`" in message and "`max_new_tokens`" not in message


def test_v1_defaults_follow_vllm(tmp_path):
    """No `max_tokens`: a completion gets vLLM's 16, a chat reply what the context leaves."""
    built, engine = _app(tmp_path, SCHEMA)
    engine._reply = "x" * 100
    with TestClient(built.fastapi) as client:
        r = client.post("/v1/completions", json={"prompt": "def f():\n"})
        assert r.json()["usage"]["completion_tokens"] == 16
        chat = {"messages": [{"role": "user", "content": "Say x."}]}
        r = client.post("/v1/chat/completions", json=chat)
        assert r.json()["usage"]["completion_tokens"] == 100  # the whole reply: no cut at 256
        limit = engine.requests[-1].params.max_new_tokens
        prompt = r.json()["usage"]["prompt_tokens"]
        assert limit == engine.info.context_length - prompt


def test_unknown_v1_fields_are_refused_by_name(tmp_path):
    built, _ = _app(tmp_path, SCHEMA)
    with TestClient(built.fastapi) as client:
        r = client.post("/v1/completions", json={"prompt": "x", "max_new_tokens": 8})
        assert r.status_code == 400
        assert r.json()["error"]["param"] == "max_new_tokens"
        assert "`max_new_tokens` is not a field of /v1/completions" in r.json()["error"]["message"]
        ok = {"prompt": "x", "max_tokens": 2, "user": "u1", "stream_options": None}
        assert client.post("/v1/completions", json=ok).status_code == 200
