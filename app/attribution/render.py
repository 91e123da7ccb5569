"""HTML for the playground: the generated text with verbatim spans marked, their sources, and
search results. Every piece of user or corpus text is escaped."""

from __future__ import annotations

from collections.abc import Sequence
from html import escape

from .core import Hit, Span


def _source_title(span: Span) -> str:
    if not span.sources:
        return ""
    first = span.sources[0]
    more = f" (+{len(span.sources) - 1} more)" if len(span.sources) > 1 else ""
    return f"{first.repo}/{first.path}{more}"


def highlight_html(text: str, spans: Sequence[Span]) -> str:
    """The text as escaped HTML in a <pre>, each span in
    <mark class="attr-span" data-span="i" title="repo/path">; i indexes `spans`."""
    parts = ['<pre class="attr-text">']
    pos = 0
    for i, span in sorted(enumerate(spans), key=lambda item: item[1].start):
        start, end = max(span.start, pos), min(span.end, len(text))
        if start >= end:
            continue  # overlapping or out-of-range spans are never rendered twice
        parts.append(escape(text[pos:start]))
        parts.append(
            f'<mark class="attr-span" data-span="{i}" '
            f'title="{escape(_source_title(span), quote=True)}">'
            f"{escape(text[start:end])}</mark>"
        )
        pos = end
    parts.append(escape(text[pos:]))
    parts.append("</pre>")
    return "".join(parts)


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
    parts, pos = [], 0
    for start, end in sorted(highlights):
        if start < pos or end <= start:
            continue
        parts.append(escape(snippet[pos:start]))
        parts.append(f"<mark>{escape(snippet[start:end])}</mark>")
        pos = end
    parts.append(escape(snippet[pos:]))
    return "".join(parts)


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
