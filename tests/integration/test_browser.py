"""Headless Debian Chromium (via Playwright's executable_path) drives all three modes."""

import os
import shutil

import pytest
from playwright.sync_api import TimeoutError as PlaywrightTimeout

pytestmark = pytest.mark.browser

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture(scope="module")
def browser():
    if not os.path.exists(CHROMIUM):
        if os.environ.get("CI"):
            pytest.fail("Debian's chromium is not installed: .ci/run should install it")
        pytest.skip("chromium not installed (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.fixture
def page(browser, live_app):
    ctx = browser.new_context(viewport={"width": 1280, "height": 1000})
    pg = ctx.new_page()
    pg.set_default_timeout(30_000)
    pg.goto(live_app.url)
    pg.wait_for_selector("#completion-prompt textarea")
    yield pg
    ctx.close()


RECORD_LENGTHS = """(sel) => {
  window.__lengths = [];
  const el = document.querySelector(sel);
  new MutationObserver(() => window.__lengths.push(el.innerText.length))
    .observe(el, {childList: true, subtree: true, characterData: true});
}"""


def _set_param(page, name: str, value, tab: str = "completion") -> None:
    box = page.locator(f"#{tab}-{name} input[type=number]")
    if not box.is_visible():
        page.click(f"#{tab}-params")  # open the tab's accordion
    # A slider drawn a moment ago can still take its first value after Playwright's fill (in
    # about 1 of 3 runs right after the accordion opened): fill again until the value stays.
    for _ in range(5):
        box.fill(str(value))
        box.press("Enter")
        page.wait_for_timeout(50)
        if box.input_value() == str(value):
            return
    raise AssertionError(f"#{tab}-{name} kept {box.input_value()!r}, not {value!r}")


def test_completion_streams_into_the_code_view(page):
    page.evaluate(RECORD_LENGTHS, "#completion-output")
    page.fill("#completion-prompt textarea", "def fibonacci(n):\n")
    page.click("#completion-run")
    page.wait_for_function(
        "() => document.querySelector('#completion-status').innerText.includes('tokens/s')"
    )
    view = page.inner_text("#completion-output")
    assert view.startswith("def fibonacci(n):")
    lengths = sorted(set(page.evaluate("window.__lengths")))
    assert len([n for n in lengths if n > len("def fibonacci(n):")]) >= 2, lengths
    assert page.locator("#completion-output mark.generated").count() == 1


def test_show_probabilities_shades_each_generated_token_with_its_alternatives(page):
    _set_param(page, "temperature", 0)
    _set_param(page, "max-new-tokens", 12)
    page.wait_for_function(
        "() => document.querySelector('#completion-max-new-tokens input[type=number]').value === '12'"
    )
    page.click("#completion-show-probs input")
    page.fill("#completion-prompt textarea", "def fibonacci(n):")
    page.click("#completion-run")
    page.wait_for_selector("#completion-probs span.prob", state="attached")
    tokens = page.locator("#completion-probs span.prob")
    assert 0 < tokens.count() <= 12
    raw = page.input_value("#completion-raw textarea")  # what Copy and Download give
    shown = "".join(tokens.nth(i).text_content() for i in range(tokens.count()))
    assert raw == "def fibonacci(n):" + shown  # the tokens add up to what was written
    title = tokens.first.get_attribute("title")
    assert "%" in title and len(title.splitlines()) >= 2, title  # its odds, then alternatives
    shades = tokens.evaluate_all("els => els.map(e => getComputedStyle(e).backgroundColor)")
    assert all(c not in ("", "rgba(0, 0, 0, 0)") for c in shades), shades
    assert "perplexity" in page.inner_text("#completion-probs")
    page.click("#completion-show-probs input")  # off again: the next run shows none
    page.fill("#completion-prompt textarea", "class Stack:")
    page.click("#completion-run")
    page.wait_for_function(
        "() => document.querySelector('#completion-raw textarea').value.startsWith('class Stack:')"
        " && document.querySelector('#completion-status').innerText.includes('tokens/s')"
    )
    assert page.locator("#completion-probs span.prob").count() == 0


def test_stop_ends_a_long_generation(page, live_app):
    # Greedy on a counting prompt loops without an end-of-text, so only Stop can end it early.
    prompt = "x = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12,"
    budget = live_app.handlers.registry.get("tiny-starcoder").context_length - 64
    _set_param(page, "temperature", 0)
    _set_param(page, "repetition-penalty", 1)
    _set_param(page, "max-new-tokens", budget)
    page.fill("#completion-prompt textarea", prompt)
    # The whole budget takes about a second on a fast CPU: a click that lands after the end
    # (a busy CI machine once took that long) says nothing about Stop, so run again.
    for _ in range(3):
        page.click("#completion-run")
        page.wait_for_function(  # this run's, not the last one's
            "() => document.querySelector('#completion-status').innerText.includes('Generating')"
        )
        page.wait_for_function(
            "(n) => document.querySelector('#completion-output').innerText.length > n",
            arg=len(prompt),
        )
        try:  # Stop is disabled again once the run has ended: then that click says nothing
            page.click("#completion-stop", timeout=3_000)
        except PlaywrightTimeout:
            continue
        page.wait_for_function(
            "() => /stopped by you|tokens\\/s/.test(document.querySelector('#completion-status').innerText)"
        )
        status = page.inner_text("#completion-status")
        if "stopped by you" in status:
            break
    assert "stopped by you" in status, status
    generated = int(status.split(" tokens in")[0])
    assert generated < budget


def test_fim_without_marker_shows_the_error_then_fills(page):
    page.click("button[role=tab]:has-text('Fill-in-the-middle')")
    page.fill("#fim-prompt textarea", "def f():\n    pass\n")
    page.click("#fim-run")
    page.wait_for_function(  # in the status line, the marker's name intact
        "() => document.querySelector('#fim-status').innerText.includes("
        "'exactly one <FILL_HERE> marker')"
    )
    page.fill("#fim-prompt textarea", "def add(a, b):\n    <FILL_HERE>\n\nprint(add(1, 2))\n")
    page.click("#fim-run")
    page.wait_for_function(
        "() => document.querySelector('#fim-status').innerText.includes('tokens/s')"
    )
    text = page.inner_text("#fim-output")
    assert text.startswith("def add(a, b):\n    ") and text.rstrip().endswith("print(add(1, 2))")
    assert page.locator("#fim-output mark.fim-middle").count() == 1


def test_assistant_replies_in_the_chat(page):
    page.click("button[role=tab]:has-text('Tech assistant')")
    page.fill("#assistant-message textarea", "How do I sort a list in Python?")
    page.click("#assistant-run")
    page.wait_for_function(
        "() => document.querySelector('#assistant-status').innerText.includes('tokens/s')"
    )
    chat = page.inner_text("#assistant-chat")
    assert "How do I sort a list in Python?" in chat
    assert "Human:" not in chat.split("How do I sort a list in Python?", 1)[1]


def test_share_while_streaming_says_to_wait_and_a_refused_run_keeps_the_old_output(page):
    _set_param(page, "temperature", 0)
    _set_param(page, "repetition-penalty", 1)
    _set_param(page, "max-new-tokens", 400)
    page.fill("#completion-prompt textarea", "x = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12,")
    page.click("#completion-run")
    page.wait_for_function(
        "() => document.querySelector('#completion-status').innerText.includes('Generating')"
    )
    page.click("#completion-share")
    page.get_by_text("still running").filter(visible=True).first.wait_for()
    page.click("#completion-stop")  # stopped, or finished meanwhile: either way it ends
    page.wait_for_function(
        "() => document.querySelector('#completion-status').innerText.includes('tokens in')"
    )
    assert "x = [1, 2" in page.inner_text("#completion-output")
    page.fill("#completion-prompt textarea", "   ")  # refused: said in the status line
    page.click("#completion-run")
    page.get_by_text("prompt is empty").filter(visible=True).first.wait_for()
    # The status says the refusal (not the old run's counts); the last good output stays.
    assert "tokens" not in page.inner_text("#completion-status")
    assert "x = [1, 2" in page.inner_text("#completion-output")


def test_no_two_elements_share_an_id(page):
    """The Stop button and the Stop-sequences box were both `completion-stop` (and `fim-stop`,
    `assistant-stop`): a click or a label could land on either."""
    page.click("#completion-params")  # the parameters render once their accordion opens
    page.wait_for_selector("#completion-stop-sequences textarea, #completion-stop textarea")
    dupes = page.evaluate(
        """() => { const seen = {};
          for (const el of document.querySelectorAll('[id]:not([id=""])'))
            seen[el.id] = (seen[el.id] || 0) + 1;
          return Object.keys(seen).filter((k) => seen[k] > 1); }"""
    )
    assert dupes == []
    assert page.locator("#completion-stop").evaluate("el => el.tagName") == "BUTTON"
