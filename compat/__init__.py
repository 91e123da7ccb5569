"""Every change we make to a library's own behaviour, in one visible place.

- gradio_session.py: Gradio's per-session config snapshot built lazily (SessionState.__init__).
- gradio_queue.py: checks and messages on one Blocks' queue, and two routes that failed late.
- transformers_cb.py: our per-request sampler registered for transformers' continuous batching.
- transformers_cache.py: a fill's key/value cache layers written in place (RoomyLayer).

Each is installed explicitly (at start in app/server.py and model/engines/batching.py; the cache
layers on each fill's cache in model/infill/fim_rerank.py), checks that the library is the version
it was written for (both are pinned in requirements.txt) and has its own tests.
"""

from __future__ import annotations


class UnsupportedVersion(RuntimeError):
    pass


def require(library: str, installed: str, written_for: str, patch: str) -> None:
    """Refuse to patch a library version the patch was not written for: it must fail at start,
    not silently misbehave after an upgrade."""
    if installed != written_for:
        raise UnsupportedVersion(
            f"{patch} was written for {library} {written_for}; {installed} is installed. "
            f"Check the patch against {library} {installed}, then update its version."
        )
