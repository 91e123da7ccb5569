"""Server-rendered share pages: /s/<id>, its 404, and the delete confirmation.

No JavaScript. Every piece of user content goes through `_e` (html.escape with quotes) or through
app/render.py's `highlight`, which escapes each Pygments token; the CSP in `SECURITY_HEADERS`
forbids scripts anyway, as a second line of defence.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from html import escape
from pathlib import Path
from typing import Any

from pygments.formatters import HtmlFormatter
from pygments.lexer import Lexer
from pygments.lexers import (
    MarkdownLexer,
    TextLexer,
    get_lexer_by_name,
    get_lexer_for_filename,
)
from pygments.styles import get_style_by_name
from pygments.util import ClassNotFound

from app.render import LEXER_OPTIONS, Mark, detect_language, highlight
from app.shares.store import SharePublic

SITE = "StarCoder Playground"
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'unsafe-inline'; img-src 'self' data:; "
        "form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    # Delete links carry a secret token in the query string: never leak it in a Referer.
    "Referrer-Policy": "no-referrer",
}


def _css() -> str:
    path = Path(__file__).resolve().parents[2] / "static" / "share.css"
    base = path.read_text(encoding="utf-8") if path.exists() else ""
    light = HtmlFormatter(style=get_style_by_name("default")).get_style_defs(".hl")
    dark = HtmlFormatter(style=get_style_by_name("github-dark")).get_style_defs(".hl")
    no_bg = "\n".join(ln for ln in (light + "\n").splitlines() if not ln.startswith(".hl {"))
    dark = "\n".join(ln for ln in dark.splitlines() if not ln.startswith(".hl {"))
    return f"{base}\n{no_bg}\n@media (prefers-color-scheme: dark) {{\n{dark}\n}}\n"


CSS = _css()


def _e(value: Any) -> str:
    return escape(str(value), quote=True)


# ---------------------------------------------------------------- language


def pick_lexer(share: SharePublic) -> Lexer:
    """Language from parameters ("language" or "filename"), else a guarded guess, else Python."""
    if share.mode == "assistant":
        return MarkdownLexer(**LEXER_OPTIONS)
    lang = share.parameters.get("language")
    fname = share.parameters.get("filename")
    try:
        if isinstance(lang, str) and lang:
            return get_lexer_by_name(lang.lower(), **LEXER_OPTIONS)
        if isinstance(fname, str) and fname:
            return get_lexer_for_filename(fname, **LEXER_OPTIONS)
    except ClassNotFound:
        pass
    # The playground's own rule (app/render.py); StarCoder's examples are mostly Python.
    return get_lexer_by_name(detect_language(share.output or share.prompt), **LEXER_OPTIONS)


# ---------------------------------------------------------------- pages


def _layout(title: str, body: str, *, head: str = "", base_path: str = "") -> str:
    return f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="robots" content="noindex">
<title>{_e(title)}</title>
{head}<style>
{CSS}</style>
</head>
<body>
<header class="site"><a href="{_e(base_path)}/">{SITE}</a></header>
<main>
{body}
</main>
</body>
</html>
"""


def _summary(share: SharePublic, limit: int = 180) -> str:
    text = " ".join((share.prompt or share.output).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _title(share: SharePublic) -> str:
    what = {"completion": "completion", "fim": "fill-in-the-middle", "assistant": "assistant"}
    model = f" by {share.model}" if share.model else ""
    return f"Shared {what.get(share.mode, share.mode)}{model} · {SITE}"


def _meta_tags(share: SharePublic, url: str | None) -> str:
    title, desc = _title(share), _summary(share)
    tags = [
        ("property", "og:type", "article"),
        ("property", "og:site_name", SITE),
        ("property", "og:title", title),
        ("property", "og:description", desc),
        ("name", "description", desc),
        ("name", "twitter:card", "summary"),
        ("name", "twitter:title", title),
        ("name", "twitter:description", desc),
    ]
    if url:
        tags.append(("property", "og:url", url))
    lines = [f'<meta {k}="{_e(n)}" content="{_e(v)}">' for k, n, v in tags]
    if url:
        lines.append(f'<link rel="canonical" href="{_e(url)}">')
    return "\n".join(lines) + "\n"


def _time(share: SharePublic) -> str:
    iso = share.created_at.strftime("%Y-%m-%dT%H:%M:%SZ")
    return f'<time datetime="{iso}">{share.created_at:%Y-%m-%d %H:%M} UTC</time>'


def _params_table(params: dict[str, Any]) -> str:
    if not params:
        return "<p>Defaults (no parameters recorded).</p>"
    rows = "".join(
        f"<tr><th scope=row>{_e(k)}</th><td><code>{_e(json.dumps(v, ensure_ascii=False))}</code>"
        f"</td></tr>"
        for k, v in sorted(params.items())
    )
    return f'<table class="params"><tbody>{rows}</tbody></table>'


def _code_block(
    text: str, lexer: Lexer, marks: Sequence[Mark] = (), *, wrap: bool = False, label: str = ""
) -> str:
    cls = "hl wrap" if wrap else "hl"
    aria = f' aria-label="{_e(label)}"' if label else ""
    return f'<pre class="{cls}"{aria}><code>{highlight(text, lexer, marks)}</code></pre>'


_GEN = "generated by the model"
_PLAIN = TextLexer(**LEXER_OPTIONS)  # the assistant's question: prose, not code


def _gen_mark(start: int, end: int) -> Mark:
    return Mark(start, end, "gen", _GEN, tag="ins")


def _span_marks(share: SharePublic) -> list[Mark]:
    return [
        Mark(s["start"], s["end"], "attr", anchor=f"span-{i}") for i, s in enumerate(share.spans)
    ]


def _spans_list(share: SharePublic) -> str:
    if not share.spans:
        return ""
    items = []
    for i, s in enumerate(share.spans):
        extra = ", ".join(f"{k}: {v}" for k, v in s.items() if k not in ("start", "end"))
        text = share.output[s["start"] : s["end"]]
        items.append(
            f'<li><a href="#span-{i}">characters {s["start"]}–{s["end"]}</a> '
            f"({len(text)} chars){': ' + _e(extra) if extra else ''}</li>"
        )
    return (
        f"<h2>Attribution</h2><p>{len(share.spans)} part(s) of the output match the training "
        f'data (<mark class="attr">marked</mark>).</p><ul class="spans">{"".join(items)}</ul>'
    )


def _generation(share: SharePublic, lexer: Lexer) -> str:
    spans = _span_marks(share)
    legend = (
        '<p class="legend"><ins class="gen sample">highlighted</ins> = written by the model</p>'
    )
    if share.mode == "assistant":
        return (
            f"<h2>Question</h2>{_code_block(share.prompt, _PLAIN, wrap=True, label='prompt')}"
            f"<h2>Answer</h2>{_code_block(share.output, lexer, spans, wrap=True, label='output')}"
        )
    if share.mode == "fim" and share.fim:
        marks = [_gen_mark(share.fim.middle_start, share.fim.middle_end), *spans]
        prompt = _code_block(share.prompt, lexer, label="prompt")
        return (
            f"<h2>Code</h2>{legend}{_code_block(share.output, lexer, marks, label='output')}"
            f"<details><summary>Prompt as written</summary>{prompt}</details>"
        )
    if share.mode == "completion" and share.prompt and share.output.startswith(share.prompt):
        marks = [_gen_mark(len(share.prompt), len(share.output)), *spans]
        return f"<h2>Code</h2>{legend}{_code_block(share.output, lexer, marks, label='output')}"
    marks = [_gen_mark(0, len(share.output)), *spans]
    return (
        f"<h2>Prompt</h2>{_code_block(share.prompt, lexer, label='prompt')}"
        f"<h2>Output</h2>{legend}{_code_block(share.output, lexer, marks, label='output')}"
    )


def render_share(share: SharePublic, *, base_path: str = "", public_url: str | None = None) -> str:
    """The page at /s/<id>. `base_path` prefixes links; `public_url` is this page's full URL."""
    lexer = pick_lexer(share)
    mode = {"completion": "Completion", "fim": "Fill in the middle", "assistant": "Assistant"}
    open_href = f"{base_path}/?share={share.id}"
    body = f"""<h1>Shared generation <span class="badge">{_e(mode.get(share.mode, share.mode))}</span></h1>
<dl class="meta">
<dt>Mode</dt><dd>{_e(share.mode)}</dd>
<dt>Model</dt><dd>{_e(share.model or "unknown")}</dd>
<dt>Created</dt><dd>{_time(share)}</dd>
</dl>
<div class="actions"><a class="button primary" href="{_e(open_href)}">Open in playground</a></div>
{_generation(share, lexer)}
{_spans_list(share)}
<h2>Parameters</h2>
{_params_table(share.parameters)}
<footer>Share <code>{_e(share.id)}</code>. Anyone with this link can view it.</footer>"""
    return _layout(_title(share), body, head=_meta_tags(share, public_url), base_path=base_path)


def render_not_found(share_id: str, *, base_path: str = "") -> str:
    body = f"""<h1>Share not found</h1>
<p>There is no shared generation at <code>/s/{_e(share_id[:80])}</code>. The link may be
mistyped, or its creator deleted it.</p>
<div class="actions"><a class="button primary" href="{_e(base_path)}/">Go to the playground</a></div>"""
    return _layout(f"Share not found · {SITE}", body, base_path=base_path)


def render_unavailable(message: str, *, base_path: str = "") -> str:
    body = f"""<h1>Try again in a minute</h1>
<p>{_e(message)}</p>
<div class="actions"><a class="button primary" href="{_e(base_path)}/">Go to the playground</a></div>"""
    return _layout(f"Unavailable · {SITE}", body, base_path=base_path)


def render_delete_confirm(share: SharePublic, token: str, *, base_path: str = "") -> str:
    action = f"{base_path}/s/{share.id}/delete"
    body = f"""<h1>Delete this share?</h1>
<p>The {_e(share.mode)} shared on {_time(share)} will be removed for good, and
<a href="{_e(base_path)}/s/{_e(share.id)}"><code>/s/{_e(share.id)}</code></a> will stop working.</p>
<blockquote>{_e(_summary(share))}</blockquote>
<form method="post" action="{_e(action)}">
<input type="hidden" name="token" value="{_e(token)}">
<div class="actions"><button class="button danger" type="submit">Delete permanently</button>
<a class="button" href="{_e(base_path)}/s/{_e(share.id)}">Keep it</a></div>
</form>"""
    return _layout(f"Delete share? · {SITE}", body, base_path=base_path)


def render_deleted(share_id: str, *, base_path: str = "") -> str:
    body = f"""<h1>Share deleted</h1>
<p>The share <code>{_e(share_id)}</code> was deleted. Its link now shows a not-found page.</p>
<div class="actions"><a class="button primary" href="{_e(base_path)}/">Go to the playground</a></div>"""
    return _layout(f"Share deleted · {SITE}", body, base_path=base_path)


def render_delete_refused(share_id: str, *, base_path: str = "") -> str:
    body = f"""<h1>Delete link not valid</h1>
<p>This delete link does not match share <code>{_e(share_id[:80])}</code>, so nothing was
deleted. Use the exact private link you got when you shared it.</p>
<div class="actions"><a class="button" href="{_e(base_path)}/s/{_e(share_id[:80])}">View the share</a></div>"""
    return _layout(f"Delete refused · {SITE}", body, base_path=base_path)
