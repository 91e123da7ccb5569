"""The share page HTML: what a reader sees, escaped, with the generated part marked."""

from __future__ import annotations

from datetime import UTC, datetime
from html import unescape
from html.parser import HTMLParser

import pytest
from pygments.lexers import PythonLexer

from app.share_page import (
    Mark,
    highlight,
    render_delete_confirm,
    render_not_found,
    render_share,
)
from app.store import FimSplit, SharePublic

XSS = [
    "</script><script>alert(1)</script>",
    "<img src=x onerror=alert(1)>",
    '"><svg onload=alert(1)>',
]


class Page(HTMLParser):
    """Collects tags, attributes, meta tags and the text inside <ins class="gen">."""

    def __init__(self, html: str):
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict]] = []
        self.meta: dict[str, str] = {}
        self.text: list[str] = []
        self.generated: list[str] = []
        self._in_gen = 0
        self.feed(html)

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        self.tags.append((tag, a))
        if tag == "meta" and ("property" in a or "name" in a):
            self.meta[a.get("property") or a["name"]] = a.get("content", "")
        if tag == "ins" and a.get("class") == "gen":
            self._in_gen += 1

    def handle_endtag(self, tag):
        if tag == "ins" and self._in_gen:
            self._in_gen -= 1

    def handle_data(self, data):
        self.text.append(data)
        if self._in_gen:
            self.generated.append(data)

    @property
    def all_text(self) -> str:
        return "".join(self.text)


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


def assert_inert(page: Page) -> None:
    """No script, no inline handlers, no injected elements from user content."""
    for tag, attrs in page.tags:
        assert tag not in ("script", "img", "svg", "iframe", "object")
        assert not any(k.startswith("on") for k in attrs), (tag, attrs)


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


@pytest.mark.parametrize(
    "text, marks",
    [
        ("def f(x):\n\treturn x  # é ✓\n", [Mark(3, 12, "ins", "gen"), Mark(0, 5, "mark", "a")]),
        ("", []),
        ("\n\n  x\n", [Mark(0, 6, "ins", "gen")]),
        ("a<b>&'\"", [Mark(1, 4, "ins", "gen"), Mark(2, 2, "mark", "a")]),
    ],
)
def test_highlighting_keeps_the_text_exactly(text, marks):
    html = highlight(text, PythonLexer(stripnl=False, ensurenl=False, tabsize=0), marks)
    page = Page(f"<pre>{html}</pre>")
    assert page.all_text == text
    stripped = "".join(Page(html).text)
    assert unescape(stripped) == text


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
