"""Compare (app/web/compare.py) over FakeEngines: two columns run at once and both finish, a
column that fails says why while the other finishes, Stop and a page that goes away end both,
and one link saves and reopens the pair (real SQLite store)."""

import threading
import time
from types import SimpleNamespace

import pytest

from app.links import PublicLinks
from app.services.generate import Generations
from app.services.search import Search
from app.services.shares import Shares
from app.shares.store import Store
from app.web.compare import compare_frames, open_pair, share_pair, stop_compare
from app.web.handlers import Handlers
from model.engine import Delta
from model.errors import PlaygroundError
from tests.fakes import APP_DEFAULTS, FakeEngine, fake_playground

PROMPT = "def f(n):\n"


def request(session="s1"):
    return SimpleNamespace(
        session_hash=session,
        client=SimpleNamespace(host="10.0.0.1"),
        headers={"host": "localhost:7860"},
    )


def make_handlers(*fakes, store=None):
    playground = fake_playground(*fakes)
    shares = Shares(store, PublicLinks(), playground.registry)
    return Handlers(Generations(playground), shares, Search(None))


def defaults(handlers, **given):
    """A column's parameter values in the schema's order: None takes the model's default."""
    return [given.get(p.name) for p in handlers.schema.page]


def last(frames) -> list:
    """Each column's last news."""
    final = [None, None]
    for frame in frames:
        final = [new if new is not None else old for new, old in zip(frame, final, strict=True)]
    return final


class HeldEngine(FakeEngine):
    """FAKE: writes its first character, then waits (up to 10 s) until its generation is
    cancelled: a long run that only Stop, or the page going away, ends early."""

    def _stream(self, request, cancel):
        for event in super()._stream(request, cancel):
            yield event
            deadline = time.monotonic() + 10
            while isinstance(event, Delta) and not cancel.cancelled and time.monotonic() < deadline:
                time.sleep(0.005)


def test_both_columns_stream_at_once_and_finish_with_their_own_model_and_status():
    b_started = threading.Event()

    def reply_a(prompt):  # run one after the other, A would wait for B in vain
        return "    return 'together'\n" if b_started.wait(10) else "    return 'alone'\n"

    def reply_b(prompt):
        b_started.set()
        return "    return 2\n"

    h = make_handlers(
        FakeEngine(reply_a, model_id="x/alpha"), FakeEngine(reply_b, model_id="x/beta")
    )
    columns = [("alpha", defaults(h)), ("beta", defaults(h))]
    a, b = last(compare_frames(h, "completion", PROMPT, columns, request()))
    assert a.record["output"] == PROMPT + "    return 'together'\n" and a.record["model"] == "alpha"
    assert b.record["output"] == PROMPT + "    return 2\n" and b.record["model"] == "beta"
    assert a.status.endswith("end of text · alpha") and b.status.endswith("end of text · beta")


def test_one_model_at_two_settings_each_column_keeps_its_own():
    h = make_handlers(FakeEngine("    return n + 1\n"))
    columns = [("", defaults(h, max_new_tokens=4)), ("", defaults(h, stop="+"))]
    a, b = last(compare_frames(h, "completion", PROMPT, columns, request()))
    assert a.text == PROMPT + "    " and "max_new_tokens reached" in a.status
    assert b.text == PROMPT + "    return n " and "stop sequence" in b.status


def test_a_column_that_fails_says_why_and_the_other_still_finishes():
    h = make_handlers(
        FakeEngine("    return 1\n", model_id="x/alpha"),
        FakeEngine("    ret", model_id="x/beta", error="the worker restarted", error_after=2),
    )
    columns = [("alpha", defaults(h)), ("beta", defaults(h))]
    a, b = last(compare_frames(h, "completion", PROMPT, columns, request()))
    assert a.record["output"] == PROMPT + "    return 1\n"
    assert b.status == "**Error:** the worker restarted" and b.record is None
    # a bad value in one column's parameters: that column names it, the other runs
    columns = [("alpha", defaults(h)), ("alpha", defaults(h, temperature=7))]
    a, b = last(compare_frames(h, "completion", PROMPT, columns, request()))
    assert a.record["output"] == PROMPT + "    return 1\n"
    assert "`temperature`" in b.status and "7" in b.status and b.record is None


def test_the_assistant_answers_one_question_in_each_column():
    h = make_handlers(FakeEngine("Use sorted().", model_id="x/alpha"))
    columns = [("alpha", defaults(h)), ("alpha", defaults(h, max_new_tokens=3))]
    a, b = last(compare_frames(h, "assistant", "How do I sort?", columns, request()))
    assert a.record["output"] == "Use sorted()." and a.record["prompt"] == "How do I sort?"
    assert b.record["output"] == "Use" and a.record["mode"] == b.record["mode"] == "assistant"


def until_both_write(frames):
    seen = [False, False]
    for frame in frames:
        seen = [
            s or (c is not None and c.text not in (None, PROMPT))
            for s, c in zip(seen, frame, strict=True)
        ]
        if all(seen):
            return
    pytest.fail("a column never started writing")


def test_stop_ends_both_columns_with_what_they_wrote():
    fakes = (
        HeldEngine("    return 1\n", model_id="x/alpha"),
        HeldEngine("    x\n", model_id="x/beta"),
    )
    h = make_handlers(*fakes)
    req = request()
    frames = compare_frames(
        h, "completion", PROMPT, [("alpha", defaults(h)), ("beta", defaults(h))], req
    )
    until_both_write(frames)
    stop_compare(h, req)
    a, b = last(frames)
    assert a.status.endswith("stopped by you · alpha") and a.text == PROMPT + " "
    assert b.status.endswith("stopped by you · beta") and b.text == PROMPT + " "


def test_a_page_that_goes_away_cancels_both_generations():
    fakes = (
        HeldEngine("    return 1\n", model_id="x/alpha"),
        HeldEngine("    x\n", model_id="x/beta"),
    )
    h = make_handlers(*fakes)
    frames = compare_frames(
        h, "completion", PROMPT, [("alpha", defaults(h)), ("beta", defaults(h))], request()
    )
    until_both_write(frames)
    frames.close()
    assert all(f.cancels[-1].cancelled for f in fakes)


def test_another_session_stop_leaves_a_comparison_alone():
    h = make_handlers(FakeEngine("    return 1\n"))
    frames = compare_frames(
        h, "completion", PROMPT, [("", defaults(h)), ("", defaults(h))], request("mine")
    )
    stop_compare(h, request("theirs"))
    a, b = last(frames)
    assert "end of text" in a.status and "end of text" in b.status


@pytest.fixture
def store(tmp_path):
    s = Store(f"sqlite:///{tmp_path / 'shares.db'}", writes_per_window=APP_DEFAULTS.share_rate)
    yield s
    s.close()


def test_one_link_saves_both_columns_and_reopens_them(store):
    h = make_handlers(
        FakeEngine("    return 1\n", model_id="x/alpha"),
        FakeEngine("    return 2\n", model_id="x/beta"),
        store=store,
    )
    columns = [("alpha", defaults(h, temperature=0)), ("beta", defaults(h, max_new_tokens=9))]
    a, b = last(compare_frames(h, "completion", PROMPT, columns, request()))
    with pytest.raises(PlaygroundError, match="Column B has nothing to share yet"):
        share_pair(h, [a.record, None], request())
    link, deletes = share_pair(h, [a.record, b.record], request())
    assert link.startswith("http://localhost:7860/?compare=") and len(deletes) == 2
    ids = link.split("=", 1)[1]
    first, second = open_pair(h, ids)
    assert (first.model, first.output, first.prompt) == ("alpha", PROMPT + "    return 1\n", PROMPT)
    assert (second.model, second.output) == ("beta", PROMPT + "    retur")
    assert h.shares.form(first)["temperature"] == 0
    assert h.shares.form(second)["max_new_tokens"] == 9


def test_a_bad_compare_link_says_what_is_wrong(store):
    h = make_handlers(FakeEngine("    return 1\n"), store=store)
    with pytest.raises(
        PlaygroundError, match="`compare` must be two share ids separated by a comma"
    ):
        open_pair(h, "abc")
    with pytest.raises(PlaygroundError, match="does not exist or was deleted"):
        open_pair(h, "A" * 16 + ",B" + "b" * 15)
    completed = last(compare_frames(h, "completion", PROMPT, [("", defaults(h))] * 2, request()))
    asked = last(compare_frames(h, "assistant", "Why?", [("", defaults(h))] * 2, request()))
    link, _ = share_pair(h, [completed[0].record, asked[0].record], request())
    with pytest.raises(
        PlaygroundError, match="two shares of one mode; got completion and assistant"
    ):
        open_pair(h, link.split("=", 1)[1])
