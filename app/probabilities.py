"""The "show probabilities" view: each generated token shaded by how likely the model found it,
with its alternatives on hover (as the OpenAI Playground shows them). Every text is escaped."""

from __future__ import annotations

import html
import math
from collections.abc import Sequence

from model.engine import TokenLogprob

BANDS = 5  # shades: p < 0.2, < 0.4, < 0.6, < 0.8, >= 0.8 (CSS classes prob-0 .. prob-4)


def band(logprob: float) -> int:
    return min(BANDS - 1, int(math.exp(logprob) * BANDS))


def _percent(logprob: float) -> str:
    p = math.exp(logprob) * 100
    return f"{p:.1f}%" if p >= 0.1 else "<0.1%"


def _show(token: str) -> str:
    """A token as a hover line shows it: quoted, whitespace made visible ('\\n', '    ')."""
    return repr(token)


def probabilities_html(tokens: Sequence[TokenLogprob], note: str = "") -> str:
    if not tokens:
        return f'<div class="probs-note">{html.escape(note)}</div>' if note else ""
    parts = []
    for t in tokens:
        lines = [f"{_show(t.token)}: {_percent(t.logprob)}"]
        lines += [f"  {_show(alt)}: {_percent(lp)}" for alt, lp in t.top if alt != t.token]
        title = html.escape("\n".join(lines), quote=True)
        parts.append(
            f'<span class="prob prob-{band(t.logprob)}" title="{title}">{html.escape(t.token)}</span>'
        )
    mean = sum(t.logprob for t in tokens) / len(tokens)
    legend = (
        f"{len(tokens)} tokens · mean log-probability {mean:.2f} (perplexity "
        f"{math.exp(-mean):.2f}) · darker = less likely · hover a token for its alternatives"
    )
    return (
        f'<pre class="probs">{"".join(parts)}</pre>'
        f'<div class="probs-note">{html.escape(legend)}</div>'
    )
