"""`/compare`, the Compare tab as a named endpoint: two columns at once, each with its own model
and parameters (by the schema's names), streamed as [text A, text B]."""

from __future__ import annotations

import gradio as gr
import pytest

from app.server import build_app
from app.settings import Settings
from tests.fakes import FakeEngine, fake_pool


@pytest.fixture(scope="module")
def compare(tmp_path_factory):
    engine = FakeEngine(lambda prompt: "    return a + b\n")
    settings = Settings.load(["--data-dir", str(tmp_path_factory.mktemp("data")),
                              "--rate-limit", "0", "--stop-loops", "off"], env={})  # fmt: skip
    built = build_app(settings, fake_pool(engine), None)
    fn = next(f.fn for f in built.blocks.fns.values() if f.api_name == "compare")
    info = built.blocks.get_api_info()["named_endpoints"]["/compare"]["parameters"]
    return fn, engine, [p["parameter_name"] for p in info]


def test_two_settings_of_one_model_stream_side_by_side(compare):
    fn, engine, published = compare
    assert published == ["prompt", "mode", "model_a", "model_b", "parameters_a", "parameters_b"]
    frames = list(fn("def add(a, b):\n", "completion", None, None,
                     {"max_new_tokens": 4, "temperature": 0}, {"max_new_tokens": 9}))  # fmt: skip
    a, b = frames[-1]
    assert a == "def add(a, b):\n    " and b == "def add(a, b):\n    retur"
    limits = sorted(r.params.max_new_tokens for r in engine.requests[-2:])
    assert limits == [4, 9]  # each column its own parameters, both sent at once


def test_a_parameter_not_in_the_schema_is_refused_by_name(compare):
    fn, _, _ = compare
    with pytest.raises(gr.Error) as err:
        list(fn("x = 1", "completion", None, None, {"max_tokens": 4}, None))
    assert err.value.message.startswith("`parameters_a.max_tokens` is not a generation parameter")
    with pytest.raises(gr.Error) as err:
        list(fn("x = 1", "completion", None, None, None, {"temperature": 3}))
    assert err.value.message == "`parameters_b.temperature` must be in [0, 1]; got 3."
    with pytest.raises(gr.Error) as err:
        list(fn("x = 1", "poetry", None, None, None, None))
    assert "`mode` must be one of completion, fim, assistant" in err.value.message


def test_a_column_that_fails_names_itself(compare):
    fn, _, _ = compare
    with pytest.raises(gr.Error) as err:  # no <FILL_HERE>: the fill is refused in both columns
        list(fn("x = 1", "fim", None, None, None, None))
    assert err.value.message.startswith("Column ")
    assert "FILL_HERE" in err.value.message
