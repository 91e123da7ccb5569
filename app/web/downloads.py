"""Files behind the Download buttons, in folders named by the server, never by the client.

The folder used to be named after Gradio's `session_hash`, which the client sets: joining the
queue with `/tmp/x` or `../../../../tmp/y` as the session wrote completion.py there. Now each
download gets a random folder, the path is checked to stay inside, and old ones are removed.
"""

from __future__ import annotations

import logging
import secrets
import shutil
import threading
import time
from pathlib import Path

log = logging.getLogger(__name__)

KEEP_SECONDS = 3600  # long enough to click Download on an old result, short enough to not pile up
SWEEP_EVERY_SECONDS = 60


class Downloads:
    def __init__(self, folder: str | Path, keep_seconds: float = KEEP_SECONDS):
        self.folder = Path(folder).resolve()
        self.folder.mkdir(parents=True, exist_ok=True)
        # Gradio copies every file it serves into its own cache (one folder per file's hash)
        # and never removes them; server.py points that cache into the data folder, and the
        # same sweep keeps it to the last `keep_seconds` of downloads.
        self.also_sweep: list[Path] = []
        self.keep_seconds = keep_seconds
        self._last_sweep = 0.0
        self._lock = threading.Lock()

    def save(self, filename: str, text: str) -> str:
        """Write `text` as `filename` (a name we chose, e.g. completion.py); returns its path."""
        self.sweep()
        path = (self.folder / secrets.token_urlsafe(16) / Path(filename).name).resolve()
        if not path.is_relative_to(self.folder):  # defence in depth: names are ours already
            raise ValueError(f"download path escapes the downloads folder: {path}")
        path.parent.mkdir()
        path.write_text(text, encoding="utf-8", newline="")
        return str(path)

    def sweep(self, now: float | None = None) -> int:
        """Remove downloads older than `keep_seconds`; at most once a minute. Returns how many."""
        now = time.time() if now is None else now
        with self._lock:
            if now - self._last_sweep < SWEEP_EVERY_SECONDS:
                return 0
            self._last_sweep = now
        removed = 0
        entries = [
            e
            for folder in (self.folder, *self.also_sweep)
            if folder.is_dir()
            for e in folder.iterdir()
        ]
        for entry in entries:
            try:
                if entry.is_dir() and now - entry.stat().st_mtime > self.keep_seconds:
                    shutil.rmtree(entry)
                    removed += 1
            except OSError:  # removed meanwhile by another sweep, or not ours to remove
                log.debug("could not remove old download %s", entry, exc_info=True)
        return removed
