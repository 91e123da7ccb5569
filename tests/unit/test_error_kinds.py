"""One table of error kinds (model/errors.py KINDS): every kind answers with the same status on
every edge: the share routes, /v1 (with OpenAI's type) and the Gradio API (a gr.Error)."""

import json

import pytest

from app.errors import user_errors
from app.web.openai_shapes import error as openai_error
from app.web.share_routes import _error_json
from model.errors import KINDS, PlaygroundError


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_every_kind_gets_its_status_on_every_edge(kind):
    exc = PlaygroundError(f"Something about `x` ({kind}).", field="x", kind=kind)
    share = _error_json(exc)
    assert share.status_code == KINDS[kind].status
    assert json.loads(share.body) == {"error": exc.message, "field": "x", "kind": kind}
    v1 = openai_error(exc)
    assert v1.status_code == KINDS[kind].status
    body = json.loads(v1.body)["error"]
    assert body == {
        "message": exc.message,
        "type": KINDS[kind].openai_type,
        "param": "x",
        "code": kind,
    }
    import gradio as gr

    @user_errors
    def endpoint():
        raise exc

    with pytest.raises(gr.Error) as shown:
        endpoint()
    assert shown.value.message == exc.message  # the page shows our words, whatever the kind
    # The HTTP edge (app/web/guard.py) answers before any route, in the share routes' shape.
    status, body = _guard_reply(kind, exc.message, "x")
    assert status == KINDS[kind].status
    assert body == {"error": exc.message, "field": "x", "kind": kind}


def _guard_reply(kind: str, message: str, field: str) -> tuple[int, dict]:
    import asyncio

    from app.web.guard import EdgeGuard

    sent = []

    async def send(event):
        sent.append(event)

    guard = EdgeGuard(None, max_body_bytes=1, body_timeout_s=1)
    asyncio.run(guard._reply(send, kind, message, field))
    return sent[0]["status"], json.loads(sent[1]["body"])


def test_server_faults_are_5xx_and_client_mistakes_4xx():
    # share_routes used to answer config/engine/oom with 400; /v1 had no `forbidden`.
    assert {k for k, v in KINDS.items() if v.status >= 500} == {
        "cancelled",
        "busy",
        "config",
        "engine",
        "oom",
    }
    assert KINDS["forbidden"].status == 403 and KINDS["unauthorized"].status == 401


def test_an_undeclared_kind_is_a_programming_error():
    with pytest.raises(ValueError, match="unknown error kind"):
        PlaygroundError("x", kind="oops")


def test_a_refusal_in_the_callers_words_keeps_its_kind_and_retry_time():
    from app.ratelimit import RateLimited

    exc = RateLimited("`max_new_tokens` 400 is over the budget.", retry_after_s=2.5)
    renamed = exc.renamed({"max_new_tokens": "max_tokens"})
    assert renamed.message == "`max_tokens` 400 is over the budget." == str(renamed)
    assert isinstance(renamed, RateLimited) and renamed.headers == {"Retry-After": "3"}
    assert exc.message.startswith("`max_new_tokens`")  # the original is untouched
