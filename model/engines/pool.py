"""One engine per model on offer, started on first use. Torch-free (app/ holds the pool)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable
from pathlib import Path

from model.engine import Engine
from model.errors import PlaygroundError
from model.prompts.families import detect_fim_template
from model.registry import ModelSpec, Registry

log = logging.getLogger(__name__)


class EnginePool:
    def __init__(self, registry: Registry, factory: Callable[[ModelSpec], Engine]):
        self.registry = registry
        self._factory = factory
        self._engines: dict[str, Engine] = {}
        self._locks: dict[str, threading.Lock] = {}
        self._lock = threading.Lock()
        self._wrap: Callable[[Engine], Engine] = lambda engine: engine

    @classmethod
    def single(
        cls, engine: Engine, data_dir: str | Path, spec: ModelSpec | None = None
    ) -> EnginePool:
        """A pool of one ready engine (a remote server, a test, a benchmark); `spec`: its entry,
        by default one built from the engine's ModelInfo."""
        info = engine.info
        spec = spec or ModelSpec(
            id=info.model_id.rstrip("/").rsplit("/", 1)[-1] or info.model_id,
            label=info.model_id,
            source="hub",
            location=info.model_id,
            context_length=info.context_length,
            fim=detect_fim_template(info.special_tokens) is not None,
            fim_by_rerank=info.fills_by_rerank,
            chat_template=info.has_chat_template,
        )
        pool = cls(Registry([spec], data_dir=data_dir), lambda _spec: engine)
        pool._engines[spec.id] = engine
        return pool

    def choose(self, model: str | None, mode: str) -> tuple[ModelSpec, Engine]:
        """The spec and the (started) engine a request in `mode` runs on."""
        spec = self.registry.choose(model or None, mode)
        return spec, self.get(spec)

    def get(self, spec: ModelSpec) -> Engine:
        with self._lock:
            engine = self._engines.get(spec.id)
            if engine is not None:
                return engine
            lock = self._locks.setdefault(spec.id, threading.Lock())
        with lock:  # one start per model, however many requests arrive meanwhile
            if spec.id not in self._engines:
                log.info("starting the engine for %s", spec.id)
                engine = self._factory(spec)
                # The wrapper is read only now: a start takes seconds, and a wrapper (metrics)
                # set meanwhile must apply to it too, or this engine goes uncounted for ever.
                with self._lock:
                    self._engines[spec.id] = self._wrap(engine)
            return self._engines[spec.id]

    def wrap(self, wrapper: Callable[[Engine], Engine]) -> None:
        """Apply `wrapper` (e.g. metrics) to every engine, started now or later."""
        with self._lock:
            self._wrap = wrapper
            self._engines = {k: wrapper(e) for k, e in self._engines.items()}

    def warm(self, model_ids: Iterable[str]) -> threading.Thread:
        """Start these models' engines in the background, so first requests do not wait."""

        def run() -> None:
            for model_id in dict.fromkeys(model_ids):
                try:
                    self.get(self.registry.get(model_id))
                except PlaygroundError as exc:  # said again to whoever asks for this model
                    log.warning("could not start %s: %s", model_id, exc.message)
                except Exception:
                    log.exception("could not start %s in the background", model_id)

        thread = threading.Thread(target=run, name="warm-engines", daemon=True)
        thread.start()
        return thread

    def loaded(self) -> dict[str, Engine]:
        with self._lock:
            return dict(self._engines)

    def close(self) -> None:
        for engine in self.loaded().values():
            engine.close()
