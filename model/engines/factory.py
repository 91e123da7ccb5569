"""Builds the engine the settings ask for. Torch-free: the worker process owns the model."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

from model.engine import Engine

log = logging.getLogger(__name__)


def build_engine(
    *,
    model: str | None,
    # The settings' values, every one (app/settings.py holds the defaults); the worker's only
    # matter without engine_url.
    device: str,
    hf_token: str | None,
    log_level: str,
    max_batch: int,
    max_queue: int,
    data_dir: str,
    kv_cache_mb: float | None,
    torch_threads: int | None,
    dtype: str,
    engine_url: str | None = None,
    engine_model: str | None = None,
    engine_api_key: str | None = None,
    tokenizer_for: Callable[[Sequence[str]], str | None] | None = None,
) -> Engine:
    """A RemoteEngine when `engine_url` is set, else a started WorkerEngine for `model`."""
    if engine_url:
        from model.engines.remote import RemoteEngine

        log.info("using the remote engine at %s", engine_url)
        # `model` names the tokenizer (exact token counts, FIM tokens, healing); unset, the
        # one `tokenizer_for` finds for the served model.
        return RemoteEngine(
            engine_url,
            model=engine_model,
            tokenizer=model,
            tokenizer_for=tokenizer_for,
            api_key=engine_api_key,
        )
    from model.engines.worker import WorkerConfig, WorkerEngine

    config = WorkerConfig(
        model,
        device=device,
        hf_token=hf_token,
        max_batch=max_batch,
        log_level=log_level,
        data_dir=data_dir,
        kv_cache_mb=kv_cache_mb,
        torch_threads=torch_threads,
        dtype=dtype,
    )
    engine = WorkerEngine(config, max_queue=max_queue, report_queue=True)
    return engine.start()
