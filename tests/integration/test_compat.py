"""Each library patch in compat/ refuses a version it was not written for, and does its job."""

from __future__ import annotations

import gradio as gr
import pytest
import transformers

from compat import UnsupportedVersion, gradio_queue, gradio_session, require, transformers_cb


def test_a_patch_refuses_another_library_version():
    with pytest.raises(
        UnsupportedVersion, match=r"written for gradio 6\.31\.0; 7\.0\.0 is installed"
    ):
        require("gradio", "7.0.0", "6.31.0", "compat.gradio_queue")
    require("gradio", "6.31.0", "6.31.0", "compat.gradio_queue")  # the pinned one passes


@pytest.mark.parametrize("module", [gradio_queue, gradio_session])
def test_gradio_patches_are_written_for_the_pinned_gradio(module):
    assert gr.__version__ == module.WRITTEN_FOR


def test_gradio_patches_refuse_an_upgrade(monkeypatch):
    monkeypatch.setattr(gr, "__version__", "99.0.0")
    with pytest.raises(UnsupportedVersion):
        gradio_session.install()
    with gr.Blocks() as blocks:
        gr.Markdown("x")
    blocks.queue()
    with pytest.raises(UnsupportedVersion):
        gradio_queue.tune_queue(blocks)


def test_installing_registers_our_sampler_for_batching():
    from model.tokens.sampling import RequestSamplingCB

    assert transformers.__version__ == transformers_cb.WRITTEN_FOR
    transformers_cb.install(RequestSamplingCB)
    assert transformers_cb.installed(RequestSamplingCB)
