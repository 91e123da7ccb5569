"""The code view shows exactly the generated text, escaped, with the generated part marked."""

import html
import re
from datetime import UTC, datetime

import pytest

from app.render import Mark, code_view, detect_language, highlight


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
    from app.share_page import pick_lexer
    from app.store import SharePublic
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
    assert out.index('<mark class="generated"') < out.index('<mark class="attr-span"')
    assert out.count("<mark") == out.count("</mark>") == 2
    assert 'data-query="q&quot;&lt;"' in out
    inner = re.search(r'<mark class="attr-span"[^>]*>(.*?)</mark>', out, re.S).group(1)
    assert _text_of(inner) == text[10:30]
    assert _text_of(out) == text


def test_long_texts_stream_plain_and_are_highlighted_once_at_the_end():
    from app.web.handlers import LIVE_HIGHLIGHT_CHARS, live_language

    short, long = "def f():\n    pass\n", "x = 1\n" * (LIVE_HIGHLIGHT_CHARS // 6 + 1)
    assert live_language(short, "python") == "python"
    assert live_language(long, "python") == "text"
    plain = code_view(long, live_language(long, "python"), [Mark(6, 12, "generated")])
    assert '<span class="n">' not in plain and '<mark class="generated">' in plain
    assert _text_of(plain) == long
