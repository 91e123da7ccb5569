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
    attrs: tuple[tuple[str, str], ...] = ()  # extra data-* attributes, e.g. a search query

    def open_tag(self) -> str:
        attrs = [("class", self.css_class)]
        if self.title:
            attrs.append(("title", self.title))
        attrs += list(self.attrs)
        return "<mark " + " ".join(f'{k}="{html.escape(v, quote=True)}"' for k, v in attrs) + ">"


def _laminar(marks) -> list[Mark]:
    """Sort marks outer-first and clip each inside its parent, so the tags always nest."""
    ordered = sorted((m for m in marks if m.end > m.start), key=lambda m: (m.start, -m.end))
    out: list[Mark] = []
    stack: list[Mark] = []
    for m in ordered:
        while stack and stack[-1].end <= m.start:
            stack.pop()
        if stack and m.end > stack[-1].end:
            m = Mark(m.start, stack[-1].end, m.css_class, m.title, m.attrs)
        if m.end > m.start:
            out.append(m)
            stack.append(m)
    return out


# guess_lexer is unreliable on short code: it calls `def fibonacci(n):` a Tera Term macro,
# `def is_prime(n):` scdoc and `class LinkedList:` Perl 6. Only these guesses are believed.
TRUSTED_GUESSES = {
    "C", "C++", "C#", "Go", "Java", "JavaScript", "TypeScript", "Rust", "Ruby", "PHP", "Bash",
    "HTML", "CSS", "SQL", "Kotlin", "Scala", "Swift", "Lua", "Julia", "R", "Haskell", "YAML",
    "JSON", "Dockerfile", "Makefile", "TOML", "Perl", "Python",
}  # fmt: skip
GUESS_CHARS = 4000


def detect_language(text: str, default: str = "python") -> str:
    """The one language rule (code view, downloads, share pages): Pygments' guess when it is one
    of the trusted languages, else the mode's language (`default`)."""
    if not text.strip():
        return default
    try:
        guess = guess_lexer(text[:GUESS_CHARS])
    except ClassNotFound:
        return default
    if guess.name not in TRUSTED_GUESSES or not guess.aliases:
        return default
    return guess.aliases[0]


def _lexer(language: str):
    try:
        return get_lexer_by_name(language, stripnl=False, stripall=False, ensurenl=False)
    except ClassNotFound:
        return PythonLexer(stripnl=False, ensurenl=False)


def _css_class(ttype) -> str:
    while ttype not in STANDARD_TYPES:
        ttype = ttype.parent
    return STANDARD_TYPES[ttype]


def highlight(text: str, language: str, marks=()) -> str:
    """Highlighted HTML of `text`; `marks` wrap ranges in (properly nested) <mark> elements."""
    marks = _laminar(marks)
    bounds = sorted({len(text), *(m.start for m in marks), *(m.end for m in marks)})
    pending = list(reversed(marks))  # pop() yields them in opening order
    stack: list[Mark] = []
    out: list[str] = []
    pos = 0

    def sync() -> None:
        while stack and stack[-1].end <= pos:
            stack.pop()
            out.append("</mark>")
        while pending and pending[-1].start <= pos:
            m = pending.pop()
            stack.append(m)
            out.append(m.open_tag())

    for ttype, value in _lexer(language).get_tokens(text):
        cls = _css_class(ttype)
        while value:
            sync()
            nxt = next((b for b in bounds if b > pos), pos + len(value))
            piece, value = value[: nxt - pos], value[nxt - pos :]
            esc = html.escape(piece)
            out.append(f'<span class="{cls}">{esc}</span>' if cls else esc)
            pos += len(piece)
    sync()
    out.extend("</mark>" for _ in stack)
    return f'<pre class="{STYLE_CLASS}"><code>{"".join(out)}</code></pre>'


def code_view(
    text: str, language: str, marks=(), *, placeholder: str = "Output appears here."
) -> str:
    if not text:
        return f'<div class="code-empty">{html.escape(placeholder)}</div>'
    return highlight(text, language, marks)


def style_css() -> str:
    return HtmlFormatter(style="default").get_style_defs(f".{STYLE_CLASS}")
