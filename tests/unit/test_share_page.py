"""The share page HTML: what a reader sees, escaped, with the generated part marked."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from app.shares.page import render_delete_confirm, render_not_found, render_share
from app.shares.store import FimSplit, SharePublic
from tests.markup import XSS, Page, assert_inert


def share(**kw) -> SharePublic:
    base = {
        "id": "AbCdEfGhIjKlMnOp",
        "created_at": datetime(2026, 3, 4, 5, 6, 7, tzinfo=UTC),
        "mode": "completion",
        "model": "bigcode/tiny_starcoder_py",
        "parameters": {"temperature": 0.2, "max_new_tokens": 256},
        "prompt": "def fib(n):",
        "output": "def fib(n):\n    return n if n < 2 else fib(n - 1) + fib(n - 2)\n",
    }
    return SharePublic(**{**base, **kw})


@pytest.mark.parametrize("payload", XSS)
def test_xss_payloads_in_every_field_render_as_text(payload):
    s = share(
        mode="fim",
        model=payload,
        prompt=payload,
        output=f"x = '{payload}'\n",
        fim=FimSplit(4, 4 + len(payload) + 2),
        parameters={payload: payload},
        spans=[{"start": 0, "end": 3, "source": payload}],
    )
    html = render_share(s, public_url=f"https://example.test/s/{s.id}?{payload}")
    page = Page(html)
    assert_inert(page)
    assert payload in page.all_text  # shown to the reader, as text
    assert page.meta["og:description"] == payload
    assert payload in page.meta["og:title"]


def test_completion_page_shows_code_mode_model_params_time_and_reopen_link():
    s = share()
    page = Page(render_share(s, public_url="https://example.test/s/AbCdEfGhIjKlMnOp"))
    text = page.all_text
    assert "return n if n < 2 else fib(n - 1) + fib(n - 2)" in text
    assert "bigcode/tiny_starcoder_py" in text and "completion" in text
    assert "temperature" in text and "0.2" in text and "max_new_tokens" in text
    assert "2026-03-04 05:06 UTC" in text
    assert ("time", {"datetime": "2026-03-04T05:06:07Z"}) in page.tags
    links = [a.get("href") for t, a in page.tags if t == "a"]
    assert "/?share=AbCdEfGhIjKlMnOp" in links
    # the model's continuation (not the prompt) is the marked part
    assert "".join(page.generated) == s.output[len(s.prompt) :]
    # Pygments colours the code
    assert ("span", {"class": "k"}) in page.tags  # keyword "return"
    assert page.meta["og:url"] == "https://example.test/s/AbCdEfGhIjKlMnOp"
    assert page.meta["twitter:card"] == "summary"
    assert page.meta["og:title"].startswith("Shared completion by bigcode/tiny_starcoder_py")


def test_fim_page_marks_exactly_the_generated_middle():
    out = "def add(a, b):\n    return a + b\n\nprint(add(1, 2))\n"
    a = out.index("return")
    b = out.index("\n\nprint")
    s = share(mode="fim", prompt="def add(a, b):\n    <FILL_HERE>", output=out, fim=FimSplit(a, b))
    page = Page(render_share(s))
    assert "".join(page.generated) == "return a + b"
    assert "Fill in the middle" in page.all_text


def test_base_path_prefixes_links_for_apps_under_a_root_path():
    page = Page(render_share(share(), base_path="/play"))
    links = [a.get("href") for t, a in page.tags if t == "a"]
    assert "/play/?share=AbCdEfGhIjKlMnOp" in links and "/play/" in links


def test_assistant_page_shows_question_and_answer():
    s = share(mode="assistant", prompt="How do I <reverse> a list?", output="Use `xs[::-1]`.")
    text = Page(render_share(s)).all_text
    assert "How do I <reverse> a list?" in text and "Use `xs[::-1]`." in text


def test_attribution_spans_are_marked_and_listed():
    s = share(spans=[{"start": 0, "end": 11, "repo": "octo/fib"}])
    page = Page(render_share(s))
    assert ("mark", {"class": "attr", "id": "span-0"}) in page.tags
    assert "repo: octo/fib" in page.all_text


def test_spans_crossing_the_generated_middle_stay_balanced_and_whole():
    """An attribution span may start in the prefix and end inside the middle, another run on
    into the suffix: the page still parses, and every marked range is marked in full."""
    out = "def add(a, b):\n    return a + b\n\nprint(add(1, 2))\n"
    a, b = out.index("return"), out.index("\n\nprint")
    spans = [{"start": 4, "end": a + 6, "repo": "octo/x"}, {"start": b - 3, "end": len(out) - 4}]
    s = share(mode="fim", prompt="<FILL_HERE>", output=out, fim=FimSplit(a, b), spans=spans)
    page = Page(render_share(s))  # Page raises on an unbalanced tag
    at = page.all_text.index(out)  # the output block comes first

    def marked(cls: str) -> set[int]:  # offsets into `out` (the legend has marks too)
        return {i - at for i in page.marked(cls) if at <= i < at + len(out)}

    assert marked("gen") == set(range(a, b))
    assert marked("attr") == set(range(4, a + 6)) | set(range(b - 3, len(out) - 4))
    assert "".join(page.generated) == out[a:b]
    ids = [attrs["id"] for _, attrs in page.tags if "id" in attrs]
    assert ids == ["span-0", "span-1"]  # an anchor on the first piece only


def test_not_found_page_is_friendly_and_escaped():
    page = Page(render_not_found("<img src=x onerror=alert(1)>"))
    assert_inert(page)
    assert "Share not found" in page.all_text and "<img src=x onerror=alert(1)>" in page.all_text


def test_delete_confirmation_posts_the_token_back():
    s = share()
    page = Page(render_delete_confirm(s, 'tok"en<'))
    forms = [a for t, a in page.tags if t == "form"]
    assert forms == [{"method": "post", "action": "/s/AbCdEfGhIjKlMnOp/delete"}]
    assert ("input", {"type": "hidden", "name": "token", "value": 'tok"en<'}) in page.tags
