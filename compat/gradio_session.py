"""Gradio's per-session state, made cheap to create (gradio 6.31, pinned in requirements.txt).

Gradio gives every session a snapshot of every component's config, built eagerly in
SessionState.__init__. A browser tab is one session, but each plain HTTP call to the API
(`POST /gradio_api/call/complete`) is a session of its own. On our page of ~100 components
that snapshot cost 14 ms of CPU per API request, 43 % of the web process's CPU at 8 streams,
and it stayed in memory for each of up to 10,000 sessions. A request touches only its input
components' entries and only deep links read them all, so each entry is built on first use.
"""

from __future__ import annotations

from collections.abc import Callable
from types import SimpleNamespace

import gradio as gr
from gradio import state_holder

from compat import require

WRITTEN_FOR = "6.31.0"


class LazyConfigValues(dict):
    """Gradio's `config_values`: each component's config, computed when first asked for.

    Reading or setting one key (as every request's preprocessing does for its inputs) computes
    only that key; anything that reads the whole dict first fills in the rest, in gradio's order.
    """

    def __init__(self, keys: list[int], compute: Callable[[int], dict]):
        super().__init__()
        self._keys: list[int] | None = keys
        self._key_set = set(keys)
        self._compute = compute

    def _fill(self) -> None:
        if self._keys is None:
            return
        keys, self._keys = self._keys, None
        have = dict(dict.items(self))
        dict.clear(self)
        dict.update(self, {k: have[k] if k in have else self._compute(k) for k in keys})
        dict.update(self, {k: v for k, v in have.items() if k not in self._key_set})

    def _one(self, key) -> None:
        if self._keys is not None and key in self._key_set and not dict.__contains__(self, key):
            dict.__setitem__(self, key, self._compute(key))

    def __contains__(self, key) -> bool:
        if self._keys is not None and key in self._key_set:
            return True
        return dict.__contains__(self, key)

    def __getitem__(self, key):
        self._one(key)
        return dict.__getitem__(self, key)

    def get(self, key, default=None):
        self._one(key)
        return dict.get(self, key, default)


def _filling(name: str):
    method = getattr(dict, name)

    def call(self, *args, **kwargs):
        self._fill()
        return method(self, *args, **kwargs)

    call.__name__ = name
    return call


for _name in (
    "__delitem__",
    "__iter__",
    "__len__",
    "__eq__",
    "__ne__",
    "__repr__",
    "__or__",
    "__ior__",
    "__reversed__",
    "keys",
    "values",
    "items",
    "pop",
    "popitem",
    "setdefault",
    "update",
    "copy",
    "clear",
):
    setattr(LazyConfigValues, _name, _filling(_name))

_original_init = state_holder.SessionState.__init__


def _lazy_init(self, blocks) -> None:
    # The original with no blocks to snapshot (it reads only these two attributes) ...
    _original_init(self, SimpleNamespace(default_config=blocks.default_config, blocks={}))
    config = self.blocks_config
    snapshot = dict(config.blocks)  # gradio snapshots these block objects, so do we
    # ... then the same snapshot, per key on demand.
    self.config_values = LazyConfigValues(
        [k for k in snapshot if k in blocks.blocks],
        lambda k: config.config_for_block(k, [], snapshot[k]),
    )


def install() -> None:
    """Idempotent; called when the app is built."""
    require("gradio", gr.__version__, WRITTEN_FOR, __name__)
    state_holder.SessionState.__init__ = _lazy_init
