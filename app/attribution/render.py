"""HTML for the attribution panels: the sources of verbatim spans and search results. Every piece
of user or corpus text is escaped; the spans themselves are marked by app/render.py."""

from __future__ import annotations

from collections.abc import Sequence
from html import escape

from app.render import Mark, highlight

from .core import Hit, Span


def sources_html(spans: Sequence[Span], scope: str = "") -> str:
    """A panel listing, per span, where it occurs: repo/path, lines and license; `scope` says
    which data was checked."""
    note = f'<p class="attr-scope">{escape(scope)}</p>' if scope else ""
    if not spans:
        return (
            '<div class="attr-sources attr-none">'
            f"No verbatim copies of indexed training code were found.{note}</div>"
        )
    total = sum(s.end - s.start for s in spans)
    items = []
    for i, span in enumerate(spans):
        sources = "".join(
            '<li class="attr-source">'
            f"<code>{escape(s.repo)}/{escape(s.path)}</code> "
            f'<span class="attr-lines">lines {s.start_line}–{s.end_line}</span> '
            f'<span class="attr-license">{escape(s.license)}</span></li>'
            for s in span.sources
        )
        preview = " ".join(span.text.split())
        preview = preview if len(preview) <= 80 else preview[:77] + "…"
        items.append(
            f'<li class="attr-span-item" data-span="{i}">'
            f'<span class="attr-span-ref">Span {i + 1}: {span.end - span.start} characters</span> '
            f'<code class="attr-preview">{escape(preview)}</code>'
            f"<ul>{sources}</ul></li>"
        )
    plural = "s" if len(spans) != 1 else ""
    return (
        '<div class="attr-sources">'
        f"<p>{len(spans)} verbatim span{plural} ({total} characters) found in the training "
        "data. Check the licenses before reusing this code.</p>"
        f"<ol>{''.join(items)}</ol>{note}</div>"
    )


def _marked(snippet: str, highlights: Sequence[tuple[int, int]]) -> str:
    return highlight(snippet, "text", [Mark(start, end) for start, end in highlights])


def search_results_html(hits: Sequence[Hit]) -> str:
    """Search hits: location, license, score and the snippet with matches marked."""
    if not hits:
        return '<div class="attr-results attr-none">No results.</div>'
    items = "".join(
        '<li class="attr-hit">'
        f'<div class="attr-hit-head"><code>{escape(h.repo)}/{escape(h.path)}:{h.start_line}</code> '
        f'<span class="attr-license">{escape(h.license)}</span> '
        f'<span class="attr-score">score {h.score:.2f}</span></div>'
        f'<pre class="attr-snippet">{_marked(h.snippet, h.highlights)}</pre></li>'
        for h in hits
    )
    return f'<ol class="attr-results">{items}</ol>'
