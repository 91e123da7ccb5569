"""Compare in headless Chromium: one prompt, one model at two settings in two columns, both
streamed with their own status and probabilities; one link reopens both in a new page."""

import pytest

from tests.integration.test_browser import _set_param, browser, page  # noqa: F401  (fixtures)

pytestmark = pytest.mark.browser

BOTH_DONE = """() => ['a', 'b'].every((s) =>
  (document.querySelector(`#compare-${s}-status`)?.innerText || '').includes('tokens/s'))"""

DUPLICATE_IDS = """() => { const seen = {};
  for (const el of document.querySelectorAll('[id]:not([id=""])')) seen[el.id] = (seen[el.id] || 0) + 1;
  return Object.keys(seen).filter((k) => seen[k] > 1); }"""


def _link(pg) -> str:
    box = pg.locator("#compare-link textarea, #compare-link input").first
    box.wait_for()
    pg.wait_for_function(
        "() => { const e = document.querySelector('#compare-link textarea, #compare-link input');"
        " return e && e.value.includes('?compare='); }"
    )
    return box.input_value()


def test_two_settings_stream_side_by_side_and_one_link_reopens_both(page, browser, live_app):  # noqa: F811
    page.click("button[role=tab]:has-text('Compare')")
    page.click("#compare-a-model input")  # column A names the model; B runs the default (the same)
    page.get_by_role("option", name="tiny-starcoder", exact=False).first.click()
    for side, tokens in (("a", 6), ("b", 20)):
        _set_param(page, "temperature", 0, tab=f"compare-{side}")
        _set_param(page, "max-new-tokens", tokens, tab=f"compare-{side}")
    page.wait_for_function(
        "() => document.querySelector('#compare-b-max-new-tokens input[type=number]').value === '20'"
    )
    page.click("#compare-show-probs input")
    prompt = "def fibonacci(n):"
    page.fill("#compare-prompt textarea", prompt)
    page.click("#compare-run")
    page.wait_for_function(BOTH_DONE)
    statuses = [page.inner_text(f"#compare-{s}-status") for s in "ab"]
    counts = [int(s.split(" tokens in")[0]) for s in statuses]
    assert 0 < counts[0] <= 6 and 0 < counts[1] <= 20, statuses
    assert all("tiny-starcoder" in s for s in statuses), statuses
    outputs = [page.inner_text(f"#compare-{s}-output") for s in "ab"]
    assert all(o.startswith(prompt) and len(o) > len(prompt) for o in outputs), outputs
    for side, n in zip("ab", counts, strict=True):  # each column shades its own tokens
        assert page.locator(f"#compare-{side}-probs span.prob").count() == n

    page.click("#compare-share")
    link = _link(page)
    assert "Private delete links" in page.inner_text("#compare-delete")

    other = browser.new_context(viewport={"width": 1280, "height": 1000}).new_page()
    other.set_default_timeout(30_000)
    other.goto(link)
    other.wait_for_function(
        """() => ['a', 'b'].every((s) => (document.querySelector(`#compare-${s}-status`)
          ?.innerText || '').includes('Opened shared generation'))"""
    )
    assert other.input_value("#compare-prompt textarea") == prompt
    assert [other.inner_text(f"#compare-{s}-output") for s in "ab"] == outputs
    other.click("#compare-a-params")
    other.click("#compare-b-params")
    assert other.input_value("#compare-b-max-new-tokens input[type=number]") == "20"
    assert other.input_value("#compare-a-max-new-tokens input[type=number]") == "6"
    assert other.evaluate(DUPLICATE_IDS) == []  # both columns' controls have their own ids
    other.context.close()


def test_a_bad_compare_link_says_so(page, live_app):  # noqa: F811
    page.goto(live_app.url + "?compare=doesnotexist1234")
    page.get_by_text("must be two share ids").first.wait_for()
