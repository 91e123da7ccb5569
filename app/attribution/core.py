"""Shared pieces of the attribution index: document records, segment keys, chunking, results."""

from __future__ import annotations

import hashlib
import operator
from dataclasses import dataclass, field
from pathlib import PurePosixPath

import numpy as np

# Data Portraits' segment width: a document is cut into WINDOW-character segments for the
# Bloom filter, and every WINDOW-character window of a generated text is tested.
WINDOW = 50
CHUNK_LINES = 30  # full-text search ranks chunks of this many lines, so hits carry a line
KEY_NAME = "poly64-splitmix"  # recorded in the index so a reader can refuse a different scheme

LANGUAGES = {
    ".py": "Python", ".pyi": "Python", ".js": "JavaScript", ".mjs": "JavaScript",
    ".ts": "TypeScript", ".tsx": "TypeScript", ".jsx": "JavaScript", ".java": "Java",
    ".c": "C", ".h": "C", ".cc": "C++", ".cpp": "C++", ".hpp": "C++", ".cs": "C#",
    ".go": "Go", ".rs": "Rust", ".rb": "Ruby", ".php": "PHP", ".kt": "Kotlin",
    ".swift": "Swift", ".scala": "Scala", ".sh": "Shell", ".lua": "Lua", ".r": "R",
    ".jl": "Julia", ".sql": "SQL", ".md": "Markdown", ".rst": "reStructuredText",
    ".toml": "TOML", ".yaml": "YAML", ".yml": "YAML", ".json": "JSON", ".html": "HTML",
    ".css": "CSS", ".ipynb": "Jupyter Notebook",
}  # fmt: skip


def language_of(path: str) -> str:
    return LANGUAGES.get(PurePosixPath(path).suffix.lower(), "")


def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


# Segment keys: a polynomial hash of the window's code points mod 2**64, then splitmix64's
# finalizer to spread the bits. Stable across processes (Python's hash() is salted) and,
# unlike a hashlib digest per window, computed for all windows of a text at once in numpy.
_BASE = 0x100000001B3
_POWERS = np.array([pow(_BASE, WINDOW - 1 - j, 2**64) for j in range(WINDOW)], dtype=np.uint64)
_MIX1, _MIX2 = np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB)
_S30, _S27, _S31 = np.uint64(30), np.uint64(27), np.uint64(31)


def _code_points(text: str) -> np.ndarray:
    data = text.encode("utf-32-le", "surrogatepass")
    return np.frombuffer(data, dtype="<u4").astype(np.uint64)


def _finalize(h: np.ndarray) -> np.ndarray:
    h = (h ^ (h >> _S30)) * _MIX1
    h = (h ^ (h >> _S27)) * _MIX2
    return (h ^ (h >> _S31)).view(np.int64)


def window_keys(text: str) -> np.ndarray:
    """Signed 64-bit key of every WINDOW-character window: element i is the key of
    text[i : i + WINDOW]. Empty for texts shorter than WINDOW."""
    points = _code_points(text)
    m = len(points) - WINDOW + 1
    if m <= 0:
        return np.zeros(0, dtype=np.int64)
    h = np.zeros(m, dtype=np.uint64)
    for j in range(WINDOW):  # uint64 arrays wrap on overflow: arithmetic mod 2**64
        h += points[j : j + m] * _POWERS[j]
    return _finalize(h)


# rbloom's hash function: items are already stable, well-mixed 64-bit keys, so the identity
# will do; operator.index is the identity on ints and, being C, the cheapest callback.
bloom_hash = operator.index


def document_segments(text: str) -> list[tuple[int, int]]:
    """(key, offset) of each whole WINDOW-character segment, non-overlapping as in Data Portraits."""
    points = _code_points(text)
    count = len(points) // WINDOW
    if not count:
        return []
    h = (points[: count * WINDOW].reshape(count, WINDOW) * _POWERS).sum(axis=1, dtype=np.uint64)
    keys = _finalize(h).tolist()
    return list(zip(keys, range(0, count * WINDOW, WINDOW), strict=True))


def chunk_lines(text: str, lines_per_chunk: int = CHUNK_LINES) -> list[tuple[int, int, int]]:
    """(start_line, start_char, nchars) of consecutive chunks covering the whole text."""
    lines = text.splitlines(keepends=True)
    chunks = []
    pos = 0
    for first in range(0, len(lines), lines_per_chunk):
        size = sum(len(line) for line in lines[first : first + lines_per_chunk])
        chunks.append((first + 1, pos, size))
        pos += size
    return chunks


@dataclass(frozen=True)
class IndexDocument:
    """One file to index, from any source."""

    repo: str
    path: str
    license: str
    text: str
    split: str = ""
    lang: str = ""
    sha256: str = ""

    def __post_init__(self) -> None:
        if not self.sha256:
            object.__setattr__(self, "sha256", sha256_text(self.text))
        if not self.lang:
            object.__setattr__(self, "lang", language_of(self.path))

    @property
    def nbytes(self) -> int:
        return len(self.text.encode("utf-8", "surrogatepass"))


@dataclass(frozen=True)
class Source:
    repo: str
    path: str
    license: str
    start_line: int
    end_line: int

    def to_dict(self) -> dict:
        return {
            "repo": self.repo,
            "path": self.path,
            "license": self.license,
            "start_line": self.start_line,
            "end_line": self.end_line,
        }


@dataclass(frozen=True)
class Span:
    """A verified verbatim span of a text: text[start:end] occurs in every listed source."""

    start: int
    end: int
    text: str
    sources: tuple[Source, ...]

    def search_text(self, limit: int = 200) -> str:
        """A prefix of the span for an exact-phrase search (what a click on the span runs)."""
        text = self.text[:limit]
        cut = text.rfind("\n")
        return text[:cut].rstrip() if len(self.text) > limit and cut > limit // 2 else text

    def to_dict(self) -> dict:
        return {
            "start": self.start,
            "end": self.end,
            "text": self.text,
            "sources": [s.to_dict() for s in self.sources],
        }


@dataclass(frozen=True)
class Hit:
    """One full-text search result. `highlights` are (start, end) offsets into `snippet`."""

    repo: str
    path: str
    license: str
    start_line: int
    snippet: str
    score: float
    highlights: tuple[tuple[int, int], ...] = field(default=(), compare=False)

    def to_dict(self) -> dict:
        return {
            "repo": self.repo,
            "path": self.path,
            "license": self.license,
            "start_line": self.start_line,
            "snippet": self.snippet,
            "score": self.score,
        }


@dataclass
class BuildReport:
    """What one build did, for the CLI's closing line and the logs."""

    added: int = 0
    unchanged: int = 0
    duplicates: int = 0
    replaced: int = 0
    skipped: int = 0
    bytes_added: int = 0
    seconds: float = 0.0

    def describe(self) -> str:
        rate = self.bytes_added / 1e6 / self.seconds if self.seconds else 0.0
        return (
            f"added {self.added} documents ({self.bytes_added / 1e6:.1f} MB, {rate:.2f} MB/s), "
            f"{self.replaced} replaced, {self.unchanged} unchanged, "
            f"{self.duplicates} duplicate content, {self.skipped} skipped "
            f"in {self.seconds:.1f} s"
        )
