"""Editor-sized single-line infilling tasks from real third-party code (issue 24 item 5).

HumanEval's gaps sit in short functions (a median prefix of ~170 tokens). A user's editor shows
far more: here each task masks one line of a real source file and keeps the 3,000 characters of
whole lines before it and the 1,500 after. The files are the installed sources of gradio,
transformers and sqlalchemy (permissively licensed, and not the standard library that
tiny-starcoder trained on), found with importlib, so the set is built at run time and needs no
data file; it changes only when those packages' versions do (the summary records them).

A gap line is real code: not blank, not a comment, not inside a string (docstrings), not a line
that is only a string, and not a line anyone could guess (`pass`, `)`, `else:`, ...).
Picks are by a seeded random.Random, so the same installed versions give the same tasks, and
the first N of a larger set are the set of N (`--limit`).
"""

from __future__ import annotations

import importlib.util
import io
import random
import re
import tokenize
from collections.abc import Sequence
from functools import cache
from importlib import metadata
from pathlib import Path

from bench.fim_tasks import Task

PACKAGES = ("gradio", "transformers", "sqlalchemy")
PREFIX_CHARS = 3000  # the code before the gap: whole lines, at most this many characters
SUFFIX_CHARS = 1500  # and after it (from the gap line's newline)
SEED = 24
MAX_LINE_CHARS = 120  # longer lines are rare in real code and over a fill's token budget
# Lines a reader predicts from the shape alone: they would inflate exact match.
TRIVIAL = frozenset(
    (
        "pass",
        ")",
        "]",
        "}",
        "),",
        "],",
        "},",
        "):",
        "))",
        "])",
        "else:",
        "try:",
        "finally:",
        "except:",
        "return",
        "break",
        "continue",
        "raise",
        "None",
        "True",
        "False",
        "self,",
        "*,",
        "**kwargs",
        "*args,",
        "@staticmethod",
        "@classmethod",
        "@property",
        "return self",
        "def __init__(self):",
        "super().__init__()",
    )
)
_WORD = re.compile(r"[A-Za-z0-9_]")
_STRING_START = re.compile(r"^[rRbBuUfF]{0,2}['\"]")


def package_root(name: str) -> Path:
    """The installed package's folder (importlib finds it, wherever the environment keeps it)."""
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit(f"package {name!r} is not installed; it is needed for the editor tasks")
    return Path(next(iter(spec.submodule_search_locations)))


def package_files(name: str) -> list[Path]:
    """A package's .py files, sorted by path."""
    return sorted(package_root(name).rglob("*.py"))


def versions(packages: Sequence[str] = PACKAGES) -> dict[str, str]:
    return {name: metadata.version(name) for name in packages}


def string_lines(source: str) -> set[int]:
    """0-based numbers of the lines that a multi-line string covers, and of the lines that are
    nothing but a string (a docstring, a bare literal); empty when the file does not parse."""
    out: set[int] = set()
    try:
        tokens = list(tokenize.generate_tokens(io.StringIO(source).readline))
    except (tokenize.TokenError, SyntaxError, IndentationError):
        return set(range(source.count("\n") + 1))
    for tok in tokens:
        if tok.type == tokenize.STRING or tok.type == getattr(tokenize, "FSTRING_START", -1):
            (r0, _), (r1, _) = tok.start, tok.end
            if r1 > r0:
                out.update(range(r0 - 1, r1))
    return out


def is_gap_line(line: str) -> bool:
    """Whether a line (no newline) is worth masking: code a user would want written for them."""
    code = line.strip()
    if not code or code.startswith("#") or _STRING_START.match(code):
        return False
    if code in TRIVIAL or len(code) > MAX_LINE_CHARS or not code.isascii():
        return False
    return len(_WORD.findall(code)) >= 4


def file_tasks(path: Path, label: str) -> list[Task]:
    """Every task of one file whose context fills the editor window, in line order."""
    try:
        source = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return []
    if len(source) < PREFIX_CHARS + SUFFIX_CHARS:
        return []
    lines = source.splitlines(keepends=True)
    if any(ln.endswith("\r\n") for ln in lines):
        return []
    starts = [0]
    for ln in lines:
        starts.append(starts[-1] + len(ln))
    inside = string_lines(source)
    tasks = []
    for i, ln in enumerate(lines):
        text = ln.rstrip("\n")
        if i in inside or not is_gap_line(text):
            continue
        start, end = starts[i], starts[i] + len(text)
        if start < PREFIX_CHARS or len(source) - end < SUFFIX_CHARS:
            continue  # the editor window would be short: near the file's start or end
        tasks.append(
            Task(
                task_id=f"{label}:L{i + 1}",
                problem_id="",
                prefix=cut_before(source[:start], PREFIX_CHARS),
                target=text,
                suffix=cut_after(source[end:], SUFFIX_CHARS),
                variant="single",
            )
        )
    return tasks


def cut_before(text: str, chars: int) -> str:
    """The whole lines at the end of `text` that fit in `chars` characters."""
    if len(text) <= chars:
        return text
    tail = text[-chars:]
    return tail[tail.index("\n") + 1 :] if "\n" in tail else ""


def cut_after(text: str, chars: int) -> str:
    """`text` (it starts with the gap line's newline) up to the last line end within `chars`."""
    if len(text) <= chars:
        return text
    head = text[:chars]
    return head[: head.rindex("\n") + 1]


@cache
def _labelled_files(name: str) -> tuple[tuple[Path, str], ...]:
    files = package_files(name)
    root = package_root(name).parent
    return tuple((p, p.relative_to(root).as_posix()) for p in files)


def build_editor_tasks(
    n: int, *, seed: int = SEED, packages: Sequence[str] = PACKAGES
) -> list[Task]:
    """n tasks, the packages in turn; each a random file (among those long enough) and a random
    gap line in it, never the same line twice. Deterministic for given installed versions."""
    rng = random.Random(seed)
    files = {name: list(_labelled_files(name)) for name in packages}
    for name in packages:
        rng.shuffle(files[name])  # the order files are tried in
    cursor = dict.fromkeys(packages, 0)
    out: list[Task] = []
    seen: set[str] = set()
    while len(out) < n:
        name = packages[len(out) % len(packages)]
        for _ in range(len(files[name])):
            path, label = files[name][cursor[name] % len(files[name])]
            cursor[name] += 1
            candidates = [t for t in file_tasks(path, label) if t.task_id not in seen]
            if candidates:
                task = rng.choice(candidates)
                seen.add(task.task_id)
                out.append(task)
                break
        else:
            raise SystemExit(f"{name} has no file long enough for an editor-sized task")
    return out
