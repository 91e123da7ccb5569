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


def test_an_idle_gradio_queue_does_not_wake_the_web_process_every_millisecond(monkeypatch):
    # Each wake-up of the web process takes a core from the worker's spinning threads; Gradio's
    # own queue polled every 1 ms (about 870 wake-ups a second on an idle app).
    import asyncio

    with gr.Blocks() as blocks:
        gr.Markdown("x")
    blocks.queue()
    gradio_queue.tune_queue(blocks)
    queue = blocks._queue
    queue.active_jobs = [None]
    naps, ours = [], []
    real_sleep = asyncio.sleep

    async def counted(delay, *args, **kwargs):
        # asyncio.sleep is patched for the whole process: another test's server (the session's
        # live app) sleeps through here too, from its own loop, and before `ours` is set. An
        # IndexError here once ended that server's Gradio queue for the rest of the run.
        if ours and asyncio.get_running_loop() is ours[0]:
            naps.append(delay)
        return await real_sleep(delay, *args, **kwargs)

    async def idle_for(seconds):
        ours.append(asyncio.get_running_loop())
        loops = [queue.start_processing(), queue.start_progress_updates()]
        tasks = [asyncio.ensure_future(loop) for loop in loops]
        await real_sleep(seconds)
        queue.stopped = True
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    monkeypatch.setattr(asyncio, "sleep", counted)
    asyncio.run(idle_for(0.5))
    # 0.5 s at 20 ms and 500 ms: 25 + 1 naps, and a few at the edges; Gradio's own: hundreds.
    assert 0 < len(naps) <= 30, len(naps)


def test_installing_registers_our_sampler_for_batching():
    from model.tokens.sampling import RequestSamplingCB

    assert transformers.__version__ == transformers_cb.WRITTEN_FOR
    transformers_cb.install(RequestSamplingCB)
    assert transformers_cb.installed(RequestSamplingCB)


def plain_and_roomy(prefix):
    """A DynamicLayer and a RoomyLayer, each holding the prefix's keys and values."""
    from transformers.cache_utils import DynamicLayer

    from compat.transformers_cache import RoomyLayer

    plain, roomy = DynamicLayer(), DynamicLayer()
    for layer in (plain, roomy):
        layer.update(*prefix)
    roomy.__class__ = RoomyLayer
    return plain, roomy


def test_a_roomy_cache_layer_holds_what_a_dynamic_one_does():
    import torch

    from compat import transformers_cache

    assert transformers.__version__ == transformers_cache.WRITTEN_FOR
    torch.manual_seed(0)
    prefix = [torch.randn(1, 3, 5, 4) for _ in range(2)]
    steps = [[torch.randn(4, 3, 1, 4) for _ in range(2)] for _ in range(3)]
    plain, roomy = plain_and_roomy(prefix)
    outs = []
    for layer in (plain, roomy):
        layer.batch_repeat_interleave(4)
        for k, v in steps[:2]:
            layer.update(k, v)
        layer.batch_select_indices(torch.tensor([0, 2]))
        outs.append(layer.update(steps[2][0][:2], steps[2][1][:2]))
    (plain_k, plain_v), (roomy_k, roomy_v) = outs
    assert torch.equal(plain_k, roomy_k) and torch.equal(plain_v, roomy_v)
    assert roomy.get_seq_length() == plain.get_seq_length() == 8 and roomy_k.shape[0] == 2
    buffer = roomy._k
    roomy.update(*[t[:2] for t in steps[0]])  # a step writes into the room, not a new buffer
    assert roomy._k is buffer and roomy.get_seq_length() == 9


def test_a_roomy_cache_layer_keeps_rows_in_any_order_and_repeats_a_batch():
    """Rows kept out of order (gathered) and in order (moved down in place), from a batch of
    two prompts repeated three times each: the same keys and values as DynamicLayer's."""
    import torch

    torch.manual_seed(1)
    prefix = [torch.randn(2, 3, 5, 4) for _ in range(2)]
    steps = [[torch.randn(n, 3, 1, 4) for _ in range(2)] for n in (6, 3, 2)]
    plain, roomy = plain_and_roomy(prefix)
    outs = []
    for layer in (plain, roomy):
        layer.batch_repeat_interleave(3)
        layer.update(*steps[0])
        layer.batch_select_indices(torch.tensor([4, 1, 5]))  # out of order
        layer.update(*steps[1])
        layer.batch_select_indices(torch.tensor([1, 2]))  # in order: moved in place
        outs.append(layer.update(*steps[2]))
    (plain_k, plain_v), (roomy_k, roomy_v) = outs
    assert torch.equal(plain_k, roomy_k) and torch.equal(plain_v, roomy_v)
    assert roomy_k.shape == (2, 3, 8, 4)
