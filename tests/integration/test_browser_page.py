"""The page a user enjoys (issue 26), in headless Debian Chromium: one error where it happened,
a layout from a phone to a wide screen, controls that show state, and Continue.

Screenshots are kept as test artifacts in $PAGE_ARTIFACTS, or tests/artifacts/ (gitignored).
"""

import os
from pathlib import Path

import pytest

from tests.integration.test_browser import _set_param, browser  # noqa: F401  (fixture)

pytestmark = pytest.mark.browser

ARTIFACTS = Path(os.environ.get("PAGE_ARTIFACTS") or Path(__file__).parents[1] / "artifacts")
PHONE, WIDE = (390, 844), (1280, 800)
DONE = "(id) => /tokens in|picked the|Error|Invalid/.test(document.querySelector(id).innerText)"


def _open(browser, app, size):  # noqa: F811
    ctx = browser.new_context(viewport={"width": size[0], "height": size[1]})
    page = ctx.new_page()
    page.set_default_timeout(30_000)
    page.goto(app.url)
    page.wait_for_selector("#completion-prompt textarea")
    return ctx, page


@pytest.fixture
def page(browser, live_app):  # noqa: F811
    ctx, page = _open(browser, live_app, WIDE)
    yield page
    ctx.close()


def _generate(page, prompt: str, tab: str = "completion") -> str:
    page.fill(f"#{tab}-prompt textarea", prompt)
    page.click(f"#{tab}-run")
    page.wait_for_function(  # this run's status, not the last one's
        f"() => !/tokens in|picked the/.test(document.querySelector('#{tab}-status').innerText)"
    )
    page.wait_for_function(DONE, arg=f"#{tab}-status")
    return page.inner_text(f"#{tab}-status")


def _box(page, selector: str) -> dict:
    return page.locator(selector).first.bounding_box()


def test_a_refusal_is_one_message_in_the_status_line_over_the_last_good_output(page):
    _set_param(page, "max-new-tokens", 8)
    assert "tokens in" in _generate(page, "def add(a, b):\n")
    good = page.inner_text("#completion-output")
    page.fill("#completion-prompt textarea", "   ")
    page.click("#completion-run")
    page.wait_for_function(
        "() => document.querySelector('#completion-status').innerText.includes('is empty')"
    )
    status = page.inner_text("#completion-status")
    assert status.startswith("Invalid input:") and "prompt is empty" in status, status
    page.wait_for_timeout(500)  # an error badge or a toast would have come with the message
    assert page.inner_text("#completion-output") == good  # not painted over, not cleared
    badges = page.locator("text=/^Error$/").filter(visible=True).count()
    assert badges == 0 and page.locator(".toast-body").count() == 0
    assert page.locator("#completion-stop").is_disabled()  # nothing runs


@pytest.mark.parametrize("size", [PHONE, WIDE], ids=["390x844", "1280x800"])
def test_the_layout_works_on_a_phone_and_a_wide_screen(browser, live_app, size):  # noqa: F811
    ctx, page = _open(browser, live_app, size)
    try:
        width, height = size
        tabs = page.locator("button[role=tab]").filter(visible=True)
        labels = [tabs.nth(i).inner_text() for i in range(tabs.count())]
        assert labels == [
            "Completion",
            "Fill-in-the-middle",
            "Tech assistant",
            "Compare",
            "Search training data",
        ], labels
        assert page.locator("button[aria-label='More tabs']").filter(visible=True).count() == 0
        for tab in tabs.all():  # each tab lies within the screen's width
            box = tab.bounding_box()
            assert box["x"] >= 0 and box["x"] + box["width"] <= width, box
        picker, card = _box(page, "#model"), _box(page, "#model-card")
        code = _box(page, "#completion-prompt textarea")
        assert code["y"] + 60 < height  # the code box starts on the first screen
        assert page.locator("#completion-stop").is_disabled()
        _set_param(page, "max-new-tokens", 48)
        _generate(page, "def fibonacci(n):\n")
        output, params = _box(page, "#completion-output"), _box(page, "#completion-params")
        examples = _box(page, "#completion-examples")
        if width < 640:  # stacked: the card under the picker, at the screen's width
            assert card["y"] >= picker["y"] + picker["height"] - 1 and card["width"] > 300
            assert output["height"] <= 0.6 * height + 40  # a long output scrolls in its box
        else:  # side by side; parameters and examples in a column beside the output
            assert abs(card["y"] - picker["y"]) < 40 and card["x"] > picker["x"]
            for side in (params, examples):
                assert side["x"] >= output["x"] + output["width"] and side["y"] < height
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / f"page-{width}x{height}.png"), full_page=True)
    finally:
        ctx.close()


def test_stop_is_live_only_while_a_generation_runs_and_copy_gives_the_exact_text(page):
    page.context.grant_permissions(["clipboard-read", "clipboard-write"])
    stop = page.locator("#completion-stop")
    assert stop.is_disabled()
    _set_param(page, "temperature", 0)
    _set_param(page, "repetition-penalty", 1)
    _set_param(page, "max-new-tokens", 400)
    page.fill("#completion-prompt textarea", "x = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12,")
    page.click("#completion-run")
    page.wait_for_function("() => !document.querySelector('#completion-stop').disabled")
    page.wait_for_function(DONE, arg="#completion-status")
    page.wait_for_function("() => document.querySelector('#completion-stop').disabled")
    status = page.inner_text("#completion-status")
    assert "processing" not in status and "/" not in status.split("(")[0], status  # no timer
    # The exact text is shown once (the code view) and is one click away: Copy, Download.
    assert page.locator("#completion-exact").count() == 0
    assert not page.locator("#completion-raw").is_visible()
    page.click("#completion-copy")
    copied = page.evaluate("() => navigator.clipboard.readText()")
    assert copied.startswith("x = [1, 2, 3") and copied == page.inner_text("#completion-output")
    with page.expect_download() as download:
        page.click("#completion-download")
    assert Path(download.value.path()).read_text() == copied


def test_continue_writes_on_from_an_answer_cut_off_at_the_token_limit(page):
    page.click("button[role=tab]:has-text('Tech assistant')")
    assert not page.locator("#assistant-continue").is_visible()
    _set_param(page, "max-new-tokens", 6, tab="assistant")
    _set_param(page, "temperature", 0, tab="assistant")
    page.fill("#assistant-message textarea", "Write a Python function that adds two numbers.")
    page.click("#assistant-run")
    page.wait_for_function(DONE, arg="#assistant-status")
    assert "Continue writes more" in page.inner_text("#assistant-status")
    bubbles = page.locator("#assistant-chat .bot.message")
    first = bubbles.last.inner_text()
    page.click("#assistant-continue")
    page.wait_for_function(
        "() => !document.querySelector('#assistant-status').innerText.includes('tokens in')"
    )
    page.wait_for_function(DONE, arg="#assistant-status")
    longer = bubbles.last.inner_text()
    assert longer.startswith(first.rstrip()) and len(longer) > len(first), (first, longer)
    assert bubbles.count() == 1  # the same answer, longer; not a second one


@pytest.fixture(scope="module")
def slow_queue_app(attribution_index, tmp_path_factory):
    """The real app with Gradio's queue looking for new events only once a second."""
    from compat import gradio_queue
    from tests.conftest import _serve

    patch = pytest.MonkeyPatch()
    patch.setattr(gradio_queue, "QUEUE_POLL_S", 1.0)
    try:
        argv = ["--model", "tiny-starcoder", "--rate-limit", "0", "--stop-loops", "off"]
        yield from _serve(argv, attribution_index, tmp_path_factory)
    finally:
        patch.undo()


def test_a_parameter_changed_as_the_page_opens_is_kept(browser, slow_queue_app):  # noqa: F811
    # The page asks for a shared generation as it opens. That answer set every parameter
    # back to its default when it came after the user's change, even with no share to open.
    ctx, page = _open(browser, slow_queue_app, WIDE)
    try:
        _set_param(page, "max-new-tokens", 5)
        page.fill("#completion-prompt textarea", "def add(a, b):")
        page.click("#completion-run")
        page.wait_for_function(DONE, arg="#completion-status")
        assert page.inner_text("#completion-status").startswith("5 tokens")
    finally:
        ctx.close()
