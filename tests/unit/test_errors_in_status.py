"""errors_in_status (app/errors.py): a page's refusal or failure is its status line's text and
every other output keeps what it showed (no gr.Error: its toast and red badges)."""

import gradio as gr

from app.errors import errors_in_status
from model.errors import PlaygroundError


def test_a_refusal_after_a_frame_becomes_the_status_and_skips_the_rest():
    @errors_in_status(outputs=3, status=1)
    def run():
        yield "code", "Generating…", "record"
        raise PlaygroundError(
            "`prompt` must contain exactly one <FILL_HERE> marker.", field="prompt"
        )

    frames = list(run())
    assert frames[0] == ("code", "Generating…", "record")
    view, status, record = frames[1]
    assert status == (
        "<strong>Invalid input:</strong> `prompt` must contain exactly one &lt;FILL_HERE&gt; "
        "marker."
    )  # the marker escaped, so the status line shows it rather than dropping an unknown tag
    assert view == record == gr.skip()  # the last good output is not painted over


def test_a_bug_says_internal_error_without_the_exception_text():
    @errors_in_status(outputs=1, status=0)
    def search(q):
        raise KeyError("secret internals")

    said = search("x")
    assert said.startswith("<strong>Internal error:</strong> Something went wrong on our side")
    assert "secret" not in said
