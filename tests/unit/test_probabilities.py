"""The "show probabilities" view: shades, hover text, and hostile tokens kept inert."""

import math

from app.probabilities import band, probabilities_html
from model.engine import TokenLogprob
from tests.markup import XSS, Page, assert_inert


def test_each_token_is_shaded_by_its_probability_and_lists_its_alternatives():
    tokens = [
        TokenLogprob("def", math.log(0.9), (("def", math.log(0.9)), ("class", math.log(0.05)))),
        TokenLogprob(" f", math.log(0.3), ((" main", math.log(0.5)), (" f", math.log(0.3)))),
    ]
    html = probabilities_html(tokens)
    assert [band(t.logprob) for t in tokens] == [4, 1]
    assert (
        '<span class="prob prob-4" title="&#x27;def&#x27;: 90.0%\n  &#x27;class&#x27;: 5.0%">'
        in html
    )
    assert "&#x27; main&#x27;: 50.0%" in html  # a likelier alternative than the pick is shown
    assert "2 tokens" in html and "perplexity 1.92" in html


def test_hostile_token_text_is_escaped_in_the_view_and_its_hover_text():
    tokens = [TokenLogprob(x, -0.1, ((x, -0.1), (XSS[-1], -3.0))) for x in XSS]
    page = Page(probabilities_html(tokens))
    assert_inert(page)
    assert page.all_text.startswith("".join(XSS))  # shown as the text it is
    titles = [a["title"] for tag, a in page.tags if tag == "span"]
    assert len(titles) == 3 and XSS[-1] in titles[0]


def test_no_tokens_shows_the_note_or_nothing():
    assert probabilities_html([]) == ""
    note = probabilities_html([], "Not for <reranked> fills")
    assert "Not for &lt;reranked&gt; fills" in note
