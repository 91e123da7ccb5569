"""The one highlighter (app/render.py): the code view shows exactly the generated text, escaped,
with the generated part and verbatim spans marked; tags balance however the marks overlap."""

import html
import re
from datetime import UTC, datetime

import pytest

from app.attribution.core import Hit
from app.attribution.render import search_results_html
from app.render import Mark, code_view, detect_language, highlight
from app.web.handlers import Handlers
from tests.markup import XSS, Page, assert_inert


def _text_of(markup: str) -> str:
    return html.unescape(re.sub(r"<[^>]+>", "", markup))


def test_highlighting_keeps_every_character_including_edges_whitespace():
    text = "\n\n  def f(x):\n\treturn x  \n\n\n"
    assert _text_of(highlight(text, "python")) == text


def test_user_content_is_escaped():
    text = "</script><script>alert(1)</script><img src=x onerror=alert(1)>"
    out = highlight(text, "python")
    assert "<script>" not in out and "<img" not in out
    assert _text_of(out) == text


def test_marks_wrap_exactly_the_generated_range():
    text = "def add(a, b):\n    return a + b\n"
    start = text.index("return")
    out = highlight(text, "python", [Mark(start, start + len("return a + b"), "fim-middle")])
    inner = re.search(r'<mark class="fim-middle"[^>]*>(.*?)</mark>', out, re.S).group(1)
    assert _text_of(inner) == "return a + b"
    assert _text_of(out) == text


def test_language_detection_with_fallback():
    assert detect_language("#include <stdio.h>\nint main(void) { return 0; }\n") == "c"
    assert detect_language("") == "python"
    assert "Output appears here" in code_view("", "python")


MISGUESSED = [  # what Pygments' own guess called these: teratermmacro, scdoc, perl6
    'def fibonacci(n):\n    """Return the n-th Fibonacci number."""\n',
    "def is_prime(n):\n",
    "class LinkedList:\n",
]


@pytest.mark.parametrize("code", MISGUESSED)
def test_python_is_never_misnamed_in_the_view_downloads_or_share_pages(code):
    from app.shares.page import pick_lexer
    from app.shares.store import SharePublic
    from app.web.handlers import extension

    assert detect_language(code) == "python"
    assert extension(detect_language(code)) == ".py"
    share = SharePublic("x" * 16, datetime.now(UTC), "completion", None, {}, code, code)
    assert pick_lexer(share).name == "Python"
    assert '<span class="k">def</span>' in highlight(code, detect_language(code)) or "class" in code


def test_attribution_marks_nest_inside_the_generated_mark():
    text = "prompt:" + "x = compute(a, b)\n" * 3
    gen = Mark(7, len(text), "generated")
    span = Mark(10, 30, "attr-span", "repo/path.py", (("data-query", 'q"<'),))
    out = highlight(text, "python", [span, gen])
    # marks that nest stay whole: one generated element, one span inside it
    assert out.index('<mark class="generated"') < out.index('<mark class="attr-span"')
    assert out.count("<mark") == out.count("</mark>") == 2
    assert 'data-query="q&quot;&lt;"' in out
    inner = re.search(r'<mark class="attr-span"[^>]*>(.*?)</mark>', out, re.S).group(1)
    assert _text_of(inner) == text[10:30]
    assert _text_of(out) == text


CROSSING = [  # (text, marks): ranges that cross, touch, nest, cut tokens, or run off the end
    ("def f(x):\n\treturn x  # é ✓\n", [Mark(3, 12, "gen"), Mark(0, 5, "a")]),
    ("", []),
    ("\n\n  x\n", [Mark(0, 6, "gen")]),
    ("a<b>&'\"", [Mark(1, 4, "gen"), Mark(2, 2, "a")]),
    ("x = 1\ny = 2\nz = 3\n", [Mark(0, 8, "a"), Mark(4, 14, "gen"), Mark(10, 18, "b")]),
    ("abc = 'def'\n", [Mark(2, 9, "gen"), Mark(2, 9, "a"), Mark(5, 40, "b"), Mark(-3, 1, "c")]),
    ("x = 1\r\ny = 2\r\n", [Mark(3, 9, "gen")]),  # Pygments would turn \r\n into \n: plain
]


@pytest.mark.parametrize("text, marks", CROSSING)
def test_any_marks_give_balanced_tags_exact_text_and_whole_ranges(text, marks):
    page = Page(highlight(text, "python", marks))  # Page raises on an unbalanced tag
    assert page.all_text == text
    for m in marks:
        expected = set(range(max(m.start, 0), min(m.end, len(text))))
        assert page.marked(m.css_class) == expected, m


def test_a_span_running_from_the_prompt_into_the_output_keeps_both_marked():
    """The page's own path (Handlers.code_html): attribution keeps spans that touch the
    generated part, so one may start in the prompt. Both ranges stay marked in full."""
    prompt = "import os\nfor name in os.listdir('.'):\n"
    text = prompt + "    print(name)\n    count += 1\n"
    span = {"start": 10, "end": len(prompt) + 15, "text": text[10 : len(prompt) + 15],
            "sources": [{"repo": "octo/<x>", "path": "a&b.py", "license": "MIT",
                         "start_line": 1, "end_line": 3}]}  # fmt: skip
    out = Handlers.code_html("completion", text, "python", (len(prompt), len(text)), [span])
    page = Page(out)
    assert page.all_text == text
    assert page.marked("generated") == set(range(len(prompt), len(text)))
    assert page.marked("attr-span") == set(range(10, len(prompt) + 15))
    spans = [a for t, a in page.tags if t == "mark" and a["class"] == "attr-span"]
    assert {a["title"] for a in spans} == {"Verbatim from octo/<x>/a&b.py (MIT)"}
    assert {a["data-query"] for a in spans} == {span["text"]}


@pytest.mark.parametrize("payload", XSS)
def test_hostile_text_and_titles_render_as_text(payload):
    text = f"x = '{payload}'\n"
    marks = [Mark(0, len(text), "generated", payload, (("data-query", payload),))]
    page = Page(code_view(text, "python", marks))
    assert_inert(page)
    assert page.all_text == text
    assert ("mark", {"class": "generated", "title": payload, "data-query": payload}) in page.tags


def test_search_snippets_mark_their_hits_through_the_same_highlighter():
    hit = Hit("r", "p.py", "MIT", 1, "x = '<script>' + script", 1.0, ((6, 12), (17, 23)))
    out = search_results_html([hit])
    assert "<mark>script</mark>" in out and "<script>" not in out
    page = Page(out)
    at = page.all_text.index(hit.snippet)
    assert page.marked("") == {at + i for a, b in hit.highlights for i in range(a, b)}


def test_long_texts_stream_plain_and_are_highlighted_once_at_the_end():
    from app.web.handlers import LIVE_HIGHLIGHT_CHARS, live_language

    short, long = "def f():\n    pass\n", "x = 1\n" * (LIVE_HIGHLIGHT_CHARS // 6 + 1)
    assert live_language(short, "python") == "python"
    assert live_language(long, "python") == "text"
    plain = code_view(long, live_language(long, "python"), [Mark(6, 12, "generated")])
    assert '<span class="n">' not in plain and '<mark class="generated">' in plain
    assert _text_of(plain) == long
