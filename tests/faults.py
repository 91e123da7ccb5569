"""FAKE device faults for the worker, armed by FaultyWorkerEngine's worker: no GPU runs on the
CI machines, so a CUDA error is imitated by making the model's forward raise what a dying GPU
raises."""

from __future__ import annotations

import os
from pathlib import Path

from model.engines.worker import WorkerEngine

FAULT_FILE_ENV = "PLAYGROUND_TEST_FAULT_FILE"


def fake_device_error(model) -> None:
    """When the env var names a file holding N, the model's N-th forward raises a FAKE CUDA
    error; the file is removed, so the restarted worker runs clean."""
    path = os.environ.get(FAULT_FILE_ENV)
    if not path or not os.path.exists(path):
        return
    fail_at = int(Path(path).read_text())
    os.remove(path)
    forward, calls = model.forward, [0]

    def failing_forward(*args, **kwargs):
        calls[0] += 1
        if calls[0] == fail_at:
            raise RuntimeError("CUDA error: an illegal memory access was encountered (FAKE)")
        return forward(*args, **kwargs)

    model.forward = failing_forward


def worker_main_with_device_error(conn, config) -> None:
    """The real worker (model/engines/worker_process.py), whose loaded model gets fake_device_error."""
    import model.engines.loading
    from model.engines.worker_process import worker_main

    load = model.engines.loading.load

    def load_then_arm(*args, **kwargs):
        loaded, tokenizer, info = load(*args, **kwargs)
        fake_device_error(loaded)
        return loaded, tokenizer, info

    model.engines.loading.load = load_then_arm  # worker_main imports `load` when it runs
    worker_main(conn, config)


class FaultyWorkerEngine(WorkerEngine):
    """FAKE: a WorkerEngine whose worker's model fails as FAULT_FILE_ENV says."""

    target = staticmethod(worker_main_with_device_error)
