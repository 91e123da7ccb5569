"""The one highlighter: code plus marked ranges -> escaped, Pygments-coloured HTML.

The page's code view, the share pages (app/shares/page.py) and search snippets
(app/attribution/render.py) all go through `highlight`, so escaping and mark placement are
written once. Every character of user text passes through html.escape; tags come from code.
"""

from __future__ import annotations

import html
from collections.abc import Iterable
from dataclasses import dataclass, replace

from pygments.formatters import HtmlFormatter
from pygments.lexer import Lexer
from pygments.lexers import PythonLexer, get_lexer_by_name, guess_lexer
from pygments.token import STANDARD_TYPES, Token
from pygments.util import ClassNotFound

STYLE_CLASS = "code-view"


@dataclass(frozen=True)
class Mark:
    """Wrap text[start:end] in <tag class=css_class>: the generated part, a verbatim span, a hit."""

    start: int
    end: int
    css_class: str = ""
    title: str = ""
    attrs: tuple[tuple[str, str], ...] = ()  # extra attributes, e.g. a span's data-query
    tag: str = "mark"  # share pages show the generated part as <ins>; never user input
    anchor: str = ""  # an id for links to the mark; ids are unique, so only on its first piece

    def open_tag(self, with_anchor: bool) -> str:
        attrs = [("class", self.css_class)] if self.css_class else []
        if self.title:
            attrs.append(("title", self.title))
        if with_anchor and self.anchor:
            attrs.append(("id", self.anchor))
        attrs += list(self.attrs)
        pairs = "".join(f' {k}="{html.escape(v, quote=True)}"' for k, v in attrs)
        return f"<{self.tag}{pairs}>"


# guess_lexer is unreliable on short code: it calls `def fibonacci(n):` a Tera Term macro,
# `def is_prime(n):` scdoc and `class LinkedList:` Perl 6. Only these guesses are believed.
TRUSTED_GUESSES = {
    "C", "C++", "C#", "Go", "Java", "JavaScript", "TypeScript", "Rust", "Ruby", "PHP", "Bash",
    "HTML", "CSS", "SQL", "Kotlin", "Scala", "Swift", "Lua", "Julia", "R", "Haskell", "YAML",
    "JSON", "Dockerfile", "Makefile", "TOML", "Perl", "Python",
}  # fmt: skip
GUESS_CHARS = 4000
# Show the text exactly as it is: no stripped or added newlines, no tab expansion.
LEXER_OPTIONS = {"stripnl": False, "stripall": False, "ensurenl": False, "tabsize": 0}


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


def lexer_for(language: str) -> Lexer:
    try:
        return get_lexer_by_name(language, **LEXER_OPTIONS)
    except ClassNotFound:
        return PythonLexer(**LEXER_OPTIONS)


def _css_class(ttype) -> str:
    while ttype not in STANDARD_TYPES:
        ttype = ttype.parent
    return STANDARD_TYPES[ttype]


def _clipped(marks: Iterable[Mark], size: int) -> list[Mark]:
    clipped = (replace(m, start=max(m.start, 0), end=min(m.end, size)) for m in marks)
    return sorted((m for m in clipped if m.end > m.start), key=lambda m: (m.start, -m.end))


def highlight(text: str, language: str | Lexer, marks: Iterable[Mark] = ()) -> str:
    """Escaped, coloured HTML of `text` (no wrapper), each Mark's range in its own element.

    Marks nest where their ranges nest. Where two cross (an attribution span that starts in the
    prompt and runs into the generated part), the inner one is closed at the boundary and
    reopened after it: tags always balance and no mark loses part of its range, yet a mark that
    crosses nothing stays one element (one outline, one tooltip). Pygments spans are cut at mark
    boundaries, so a <span> never straddles a <mark>.
    """
    lexer = language if isinstance(language, Lexer) else lexer_for(language)
    tokens = list(lexer.get_tokens(text))
    if "".join(v for _, v in tokens) != text:  # a lexer that rewrote the text: show it plain
        tokens = [(Token.Text, text)]
    marks = _clipped(marks, len(text))
    bounds = sorted({len(text), *(m.start for m in marks), *(m.end for m in marks)})
    out: list[str] = []
    stack: list[Mark] = []  # open elements, outermost first
    anchored: set[str] = set()
    nxt = 0  # index of the next mark to open
    pos = 0

    def sync() -> None:
        nonlocal nxt
        ending = [i for i, m in enumerate(stack) if m.end <= pos]
        reopen: list[Mark] = []
        if ending:  # close from the top down to the lowest ending mark; reopen the survivors
            cut = ending[0]
            out.extend(f"</{m.tag}>" for m in reversed(stack[cut:]))
            reopen = [m for m in stack[cut:] if m.end > pos]
            del stack[cut:]
        starting = []
        while nxt < len(marks) and marks[nxt].start <= pos:
            starting.append(marks[nxt])
            nxt += 1
        for m in sorted(reopen + starting, key=lambda m: -m.end):  # longest-lived outside
            out.append(m.open_tag(with_anchor=m.anchor not in anchored))
            anchored.add(m.anchor)
            stack.append(m)

    for ttype, value in tokens:
        cls = _css_class(ttype)
        while value:
            sync()
            cut = next(b for b in bounds if b > pos)
            piece, value = value[: cut - pos], value[cut - pos :]
            esc = html.escape(piece)
            out.append(f'<span class="{cls}">{esc}</span>' if cls else esc)
            pos += len(piece)
    sync()
    return "".join(out)


def code_view(text: str, language: str, marks=(), *, placeholder="Output appears here.") -> str:
    """The page's output panel: the highlighted text, or a placeholder before the first run."""
    if not text:
        return f'<div class="code-empty">{html.escape(placeholder)}</div>'
    return f'<pre class="{STYLE_CLASS}"><code>{highlight(text, language, marks)}</code></pre>'


def style_css() -> str:
    return HtmlFormatter(style="default").get_style_defs(f".{STYLE_CLASS}")
