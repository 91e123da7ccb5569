"""HTML for the code view: Pygments highlighting with marked ranges, every character escaped."""

from __future__ import annotations

import html
from dataclasses import dataclass

from pygments.formatters import HtmlFormatter
from pygments.lexers import PythonLexer, get_lexer_by_name, guess_lexer
from pygments.token import STANDARD_TYPES
from pygments.util import ClassNotFound

STYLE_CLASS = "code-view"


@dataclass(frozen=True)
class Mark:
    start: int
    end: int
    css_class: str
    title: str = ""


def detect_language(text: str, default: str = "python") -> str:
    """Pygments' guess, falling back to the mode's language when the guess is weak."""
    if not text.strip():
        return default
    try:
        lexer = guess_lexer(text)
    except ClassNotFound:
        return default
    # guess_lexer answers "text" (or a template lexer) for short snippets; keep the default then.
    name = lexer.aliases[0] if lexer.aliases else default
    return default if name in {"text", "output"} or "+" in name else name


def _lexer(language: str):
    try:
        return get_lexer_by_name(language, stripnl=False, stripall=False, ensurenl=False)
    except ClassNotFound:
        return PythonLexer(stripnl=False, ensurenl=False)


def _css_class(ttype) -> str:
    while ttype not in STANDARD_TYPES:
        ttype = ttype.parent
    return STANDARD_TYPES[ttype]


def highlight(text: str, language: str, marks: list[Mark] | tuple[Mark, ...] = ()) -> str:
    """Highlighted HTML of `text`; `marks` (non-overlapping) wrap ranges in <mark> elements."""
    bounds = sorted({0, len(text), *(m.start for m in marks), *(m.end for m in marks)})
    starts = {m.start: m for m in marks if m.end > m.start}
    ends = {m.end for m in marks if m.end > m.start}
    out: list[str] = []
    pos = 0
    for ttype, value in _lexer(language).get_tokens(text):
        cls = _css_class(ttype)
        while value:
            if pos in ends:
                out.append("</mark>")
                ends.discard(pos)  # closed once even if another mark starts here
            if pos in starts:
                m = starts[pos]
                title = f' title="{html.escape(m.title)}"' if m.title else ""
                out.append(f'<mark class="{m.css_class}"{title}>')
            nxt = next((b for b in bounds if b > pos), pos + len(value))
            piece, value = value[: nxt - pos], value[nxt - pos :]
            esc = html.escape(piece)
            out.append(f'<span class="{cls}">{esc}</span>' if cls else esc)
            pos += len(piece)
    if pos in ends:
        out.append("</mark>")
    return f'<pre class="{STYLE_CLASS}"><code>{"".join(out)}</code></pre>'


def code_view(
    text: str, language: str, marks=(), *, placeholder: str = "Output appears here."
) -> str:
    if not text:
        return f'<div class="code-empty">{html.escape(placeholder)}</div>'
    return highlight(text, language, marks)


def style_css() -> str:
    return HtmlFormatter(style="default").get_style_defs(f".{STYLE_CLASS}")
