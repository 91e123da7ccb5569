"""Gradio's per-session config snapshot is built on first use (app/session_state.py), with the
same content as gradio's eager build, so pages and deep links are unchanged."""

import httpx
from gradio import state_holder
from gradio.blocks import BlocksConfig

from compat import gradio_session as session_state


def _eager(blocks) -> dict:
    return {
        k: BlocksConfig.config_for_block(k, [], v)
        for k, v in blocks.default_config.blocks.items()
        if k in blocks.blocks
    }


def test_an_api_call_builds_only_its_inputs_configs(live_app, monkeypatch):
    calls = []
    original = BlocksConfig.config_for_block
    monkeypatch.setattr(
        BlocksConfig, "config_for_block", staticmethod(lambda *a: calls.append(a) or original(*a))
    )
    url = live_app.url
    r = httpx.post(
        f"{url}gradio_api/call/complete",
        json={"data": ["def f(", None, 2, 0, 0.9, 1.0, None, None]},
    )
    event = r.json()["event_id"]
    text = httpx.get(f"{url}gradio_api/call/complete/{event}", timeout=60).text
    assert "event: complete" in text and "def f(" in text
    # Only the call's own 8 inputs and 1 output; gradio built every component's on the page.
    assert 0 < len(calls) <= 9 < len(live_app.blocks.blocks) // 4, len(calls)


def test_the_deferred_snapshot_equals_gradios(live_app):
    blocks = live_app.blocks
    session = state_holder.SessionState(blocks)
    assert isinstance(session.config_values, session_state.LazyConfigValues)
    assert dict(session.config_values.items()) == _eager(blocks)
    assert len(list(session.components)) > 50  # what a deep link serves


def test_updates_before_first_read_keep_the_rest_of_the_snapshot(live_app):
    blocks = live_app.blocks
    session = state_holder.SessionState(blocks)
    key = next(
        k for k, v in blocks.blocks.items() if getattr(v, "elem_id", None) == "completion-seed"
    )
    session._update_value_in_config(key, "42")
    values = dict(session.config_values.items())
    expected = _eager(blocks)
    expected[key]["props"]["value"] = "42"
    assert values == expected
