"""The worker process: loads the model, then serves the web process's commands over a pipe.

    in:  ("gen", rid, request), ("cancel", rid), ("tokenize" | "ping", rid, arg), ("stop",)
    out: ("ready", info) or ("failed", why) once; then ("evs", [(rid, event), ...]) per decode
         step and ("reply", rid, value) for tokenize and ping

`worker_main` is the spawn target, so it stays importable by this module path; torch and the
model are imported only inside it, and WorkerConfig crosses the spawn by pickle.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import dataclass, field, replace

from model.engine import Done
from model.engines.threads import ComputeThreads, wait_policy
from model.errors import PlaygroundError


@dataclass(frozen=True)
class WorkerConfig:
    """What the worker process needs to load the model (must pickle: it crosses the spawn)."""

    model: str
    # Requests decoded together; also the number of worker slots (MAX_BATCH: the settings
    # table holds its default, so this layer has none).
    max_batch: int = field(kw_only=True)
    device: str | None = None
    hf_token: str | None = None
    log_level: str = "INFO"
    # CPU threads for torch in the worker (TORCH_THREADS); None: auto, the cores other
    # processes leave free (model/engines/threads.py). ModelInfo.threads reports the count
    # the worker started with.
    torch_threads: int | None = None
    # Weights' and KV cache's dtype (DTYPE): auto, float32 or bfloat16 (model/engines/loading.py).
    dtype: str = "auto"
    # With a data dir, `model` may be a packaged registry id (SmolLM2), converted here on first
    # use: the conversion needs torch, which only the worker may import.
    data_dir: str | None = None
    # MiB for the paged KV cache (KV_CACHE_MB); None: derived from the machine's free memory.
    # It caps each request's prompt + max_new_tokens at what the cache holds (model/engines/kv_budget.py).
    kv_cache_mb: float | None = None


def _resolve(config: WorkerConfig) -> str:
    if config.data_dir is None:
        return config.model
    from model.registry import Registry

    registry = Registry.build(config.data_dir)
    if config.model in registry and registry.get(config.model).source == "package":
        return registry.resolve(config.model)
    return config.model


def worker_main(conn, config: WorkerConfig) -> None:
    """Entry point of the worker process: load, then serve commands until told to stop."""
    import signal

    # Ctrl+C or a SIGTERM to the whole process group is the parent's to handle: it closes us.
    # Dying with it would look like a crash and trigger a pointless restart during shutdown.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    # Spin or sleep between ops (model/engines/threads.py): read by libgomp when torch loads,
    # so before that (torch is imported below); the environment can override it.
    policy = wait_policy(config.torch_threads)
    if policy is not None:
        os.environ.setdefault("OMP_WAIT_POLICY", policy)
    logging.basicConfig(
        level=config.log_level.upper(),
        format="%(asctime)s %(levelname)s worker %(name)s: %(message)s",
    )
    send_lock = threading.Lock()

    def exit_for_restart() -> None:
        # After a CUDA error the device is unusable: exit so the parent starts a fresh worker.
        logging.getLogger(__name__).error("batching loop died; worker exits")
        with send_lock:  # not in the middle of a message
            os._exit(70)

    def send(msg) -> None:
        try:
            with send_lock:
                conn.send(msg)
        except (OSError, ValueError):
            pass  # the parent is gone; the recv loop below notices and exits

    from model.engines.batching import BatchingServer
    from model.engines.loading import load

    _main_thread_computes_alone()

    try:
        source = _resolve(config)
        model, tokenizer, info = load(
            source, device=config.device, hf_token=config.hf_token, dtype=config.dtype
        )
        compute = ComputeThreads(config.torch_threads)
        logging.getLogger(__name__).info("torch computes with %s CPU thread(s)", compute.describe())
        policy = "auto" if compute.auto else "fixed"
        info = replace(info, threads=compute.count, threads_policy=policy)
        server = BatchingServer(
            model,
            tokenizer,
            info,
            lambda events: send(("evs", events)),
            max_batch=config.max_batch,
            kv_cache_mb=config.kv_cache_mb,
            on_fatal=exit_for_restart,
            threads=compute,
        )
        info = server.info  # with the per-request limit the cache allows, and memory figures
    except PlaygroundError as exc:  # a known reason (e.g. no such model): no traceback needed
        logging.getLogger(__name__).error("worker failed to start: %s", exc.message)
        send(("failed", exc.message))
        return
    except Exception as exc:  # reported to the parent as the user-facing reason
        logging.getLogger(__name__).exception("worker failed to start")
        send(("failed", f"Model failed to load: {exc}"))
        return
    send(("ready", info))
    try:
        checked = time.monotonic()
        while True:
            ready = conn.poll(1.0)
            # Checked on a clock, not only when idle: under steady traffic poll() never times out.
            if time.monotonic() - checked >= 1.0:
                checked = time.monotonic()
                if not server.alive():  # a backstop: the router thread normally exits first
                    exit_for_restart()
            if not ready:
                continue
            try:
                msg = conn.recv()
            except (EOFError, OSError):
                break  # parent went away
            kind = msg[0]
            if kind == "gen":
                try:
                    server.submit(msg[1], msg[2])
                except Exception:  # one bad request must not kill the worker
                    logging.getLogger(__name__).exception("submit failed")
                    server.emit(
                        msg[1],
                        Done("error", error="Generation failed to start.", error_kind="engine"),
                    )
            elif kind == "cancel":
                server.cancel(msg[1])
            elif kind == "tokenize":
                send(("reply", msg[1], server.local.tokenize(msg[2])))
            elif kind == "detokenize":
                try:
                    send(("reply", msg[1], server.local.detokenize(msg[2])))
                except PlaygroundError as exc:  # ids outside the vocabulary: said, not raised
                    send(("reply", msg[1], ("refused", exc.message)))
            elif kind == "ping":
                send(("reply", msg[1], server.alive()))
            elif kind == "stop":
                break
    finally:
        server.close()


def _main_thread_computes_alone() -> None:
    """This thread loads the model and reads commands: it computes with one thread, so that
    the only OpenMP team with several is the batch's (model/engines/threads.py)."""
    import torch

    torch.set_num_threads(1)
