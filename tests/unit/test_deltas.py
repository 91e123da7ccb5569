"""Deltas end to end: the services pass on what each token adds, `/v1` streams it as it is, and
the streamed text is the text of the whole answer, in every mode, whatever the model ends with
(trailing whitespace, a stop, a turn marker)."""

from __future__ import annotations

import json
import random

import pytest
from starlette.testclient import TestClient

from app.server import build_app
from app.services.generate import throttle
from app.settings import Settings
from model.prompts.templates import ASSISTANT_STOPS, clean_reply, middle_shaper, trim_fim_middle
from model.tokens.shaping import Reply
from tests.fakes import FakeEngine, fake_pool

REPLIES = [
    "    return a + b\n\n\n",  # a fill before a new line: the blank lines go
    "Use a set.  \n\nHuman: thanks",  # a turn marker the model wrote itself
    "  ok \n\t",  # whitespace on both ends
    "x = 1\nSTOP and more",  # the caller's stop
    "def f():\n    pass\n",  # nothing to clean
]
ROUTES = {
    "completion": ("/v1/completions", {"prompt": "def add(a, b):\n"}),
    "fim": ("/v1/completions", {"prompt": "def add(a, b):\n", "suffix": "\nprint(add(1, 2))\n"}),
    "assistant": ("/v1/chat/completions", {"messages": [{"role": "user", "content": "Hi?"}]}),
}


def _text(choice: dict, chat: bool) -> str:
    return choice["message"]["content"] if chat else choice["text"]


def _streamed(response, chat: bool) -> str:
    pieces = []
    for line in response.text.splitlines():
        if not line.startswith("data: ") or line == "data: [DONE]":
            continue
        choice = json.loads(line[6:])["choices"][0]
        pieces.append(choice.get("delta", {}).get("content") or "" if chat else choice["text"])
    return "".join(pieces)


@pytest.fixture(scope="module")
def built_app(tmp_path_factory):
    engine = FakeEngine("")
    settings = Settings.load(
        [
            "--data-dir",
            str(tmp_path_factory.mktemp("data")),
            "--rate-limit",
            "0",
            "--stop-loops",
            "off",
        ],
        env={},
    )
    return build_app(settings, fake_pool(engine), None), engine


@pytest.fixture
def app_for(built_app):
    def build(reply: str):
        built, engine = built_app
        engine._reply = reply  # what the FAKE model writes next
        return built

    return build


@pytest.mark.parametrize("mode", sorted(ROUTES))
@pytest.mark.parametrize("reply", REPLIES)
def test_stream_and_whole_answer_are_the_same_text(app_for, mode, reply):
    built = app_for(reply)
    url, body = ROUTES[mode]
    body = {**body, "max_tokens": 200, "stop": ["STOP"]}
    chat = mode == "assistant"
    with TestClient(built.fastapi) as client:
        whole = client.post(url, json=body)
        assert whole.status_code == 200, whole.text
        text = _text(whole.json()["choices"][0], chat)
        streamed = _streamed(client.post(url, json={**body, "stream": True}), chat)
    assert streamed == text
    if chat:
        assert text == clean_reply(reply.split("STOP")[0])
    elif mode == "fim":
        assert text == trim_fim_middle(reply.split("STOP")[0], ROUTES["fim"][1]["suffix"])
    else:
        assert text == reply.split("STOP")[0]
    # The page's frames end with the same text.
    handlers = built.handlers
    if chat:
        *_, final = handlers.ui_assist("Hi?", [], None, *_page_values(handlers, "assistant"))
        assert final[0][-1]["content"] == text
    else:
        prompt = body["prompt"] + ("<FILL_HERE>" + body["suffix"] if mode == "fim" else "")
        *_, final = handlers.ui_code(mode, prompt, None, *_page_values(handlers, mode))
        assert final[1] == (body["prompt"] + text + body.get("suffix", ""))


def _page_values(handlers, mode):
    defaults = {**handlers.defaults(None, mode), "max_new_tokens": 200, "stop": "STOP"}
    return [defaults[p.name] for p in handlers.schema.page]


@pytest.mark.parametrize("text", [*REPLIES, "Hum", "a\n-----\nb", " \n ", "x\nAssistant: y"])
def test_the_clean_up_streamed_in_any_pieces_is_the_whole_texts(text):
    rng = random.Random(text)
    for _ in range(20):
        cuts = sorted(rng.sample(range(len(text) + 1), min(len(text), rng.randint(0, 6))))
        pieces = [text[a:b] for a, b in zip([0, *cuts], [*cuts, len(text)], strict=True)]
        reply = Reply(ASSISTANT_STOPS)
        assert "".join(map(reply.feed, pieces)) + reply.finish() == clean_reply(text)
        for suffix in ("\nprint(x)\n", ")\n", ""):
            middle = middle_shaper(suffix)
            shown = "".join(map(middle.feed, pieces)) + middle.finish()
            assert shown == trim_fim_middle(text, suffix)


def test_a_frame_skipped_by_the_throttle_passes_its_delta_on(app_for):
    built = app_for("abcdefghij")
    playground = built.handlers.generate.playground
    from app.parameters import parse_params
    from model.engine import CancelToken

    frames = list(throttle(playground.complete("x", parse_params(), CancelToken()), every=5))
    assert len(frames) == 2  # the first and the final one
    assert "".join(f.delta for f in frames) == "abcdefghij" == frames[-1].generated
