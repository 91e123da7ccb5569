"""Share from the playground: the /share endpoint, the page, and reopening in the browser."""

import urllib.request

import pytest
from gradio_client.exceptions import AppError

from tests.integration.test_browser import browser, page  # noqa: F401  (fixtures)


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def test_share_endpoint_returns_a_link_whose_page_shows_the_generation(client, live_app):
    output = "def add(a, b):\n    return a + b  # <b>not bold</b>\n"
    share = {"mode": "completion", "prompt": "def add(a, b):\n", "output": output,
             "parameters": {"temperature": 0.2}, "model": "tiny-starcoder"}  # fmt: skip
    url = client.predict(**share, api_name="/share")
    assert url.startswith(live_app.url.rstrip("/") + "/s/")
    status, body = _get(url)
    assert status == 200
    assert "&lt;b&gt;not bold&lt;/b&gt;" in body and "<b>not bold</b>" not in body
    assert "tiny-starcoder" in body
    again = client.predict(**share, api_name="/share")
    assert again != url and again.startswith(live_app.url.rstrip("/") + "/s/")  # its own link


def test_share_endpoint_validates(client):
    with pytest.raises(AppError) as err:
        client.predict(mode="poetry", prompt="x", output="y", api_name="/share")
    assert "mode" in str(err.value)


def test_browser_generate_share_open_page_and_reopen_in_playground(page, live_app):  # noqa: F811
    prompt = "import os\n"
    page.fill("#completion-prompt textarea", prompt)
    page.click("#completion-run")
    page.wait_for_function(
        "() => document.querySelector('#completion-status').innerText.includes('tokens/s')"
    )
    generated = page.input_value("#completion-raw textarea")  # what Copy gives
    assert generated.startswith(prompt)
    page.click("#completion-share")
    link_box = page.locator("#completion-link textarea, #completion-link input").first
    link_box.wait_for()
    page.wait_for_function(
        "() => { const e = document.querySelector('#completion-link textarea, #completion-link input');"
        " return e && e.value.includes('/s/'); }"
    )
    link = link_box.input_value()
    assert "Private delete link" in page.inner_text("#completion-delete")

    page.goto(link)
    assert "import" in page.inner_text("body")
    page.click("text=Open in playground")
    page.wait_for_function(
        "() => (document.querySelector('#completion-status')?.innerText || '')"
        ".includes('Opened shared')"
    )
    assert page.input_value("#completion-prompt textarea") == prompt
    assert page.input_value("#completion-raw textarea") == generated
    assert page.inner_text("#completion-output").startswith("import os")


def test_unknown_share_in_the_playground_url_says_so(page, live_app):  # noqa: F811
    page.goto(live_app.url + "?share=doesnotexist1234")
    page.get_by_text("does not exist or was deleted").first.wait_for()
