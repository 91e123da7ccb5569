"""Which single-line candidates fit the code after the gap, by the shape of the lines alone.

A left-to-right model often proposes a line that opens something (`try:`, `args.append(`) where
the next line of the suffix does not continue it: the filled file would not even parse. The
reverse happens too: the suffix's next line is indented deeper (a block's body, or the
arguments of a call), and the candidate opens nothing. Neither needs the model to see, and
the joint score does not always see it either: both terms can like such a line.

Measured as a pick rule in bench/fim_levers.py ("fit": drop the misfits, then the joint
score). It never rejected the true line (1,033 HumanEval and 300 editor-sized gaps) but
changed 1 pick in 30 editor-sized fills and no exact match, so the app does not use it
(bench/RESULTS.md, issue 24). Model-free: it could join model/infill/rerank.py's candidate_middles.
"""

from __future__ import annotations

import re

_OPEN, _CLOSE = "([{", ")]}"
# String literals and comments hide brackets and colons that are not code.
_STRINGS = re.compile(r"""[rRbBuUfF]{0,2}("[^"\\]*(?:\\.[^"\\]*)*"|'[^'\\]*(?:\\.[^'\\]*)*')""")
_BLOCK = re.compile(
    r"(async\s+)?(if|elif|else|for|while|try|except|finally|with|def|class|match|case)\b"
)


def _code(line: str) -> str:
    """The line without string literals and its comment."""
    text = _STRINGS.sub('""', line)
    return text.split("#", 1)[0].rstrip()


def _depth(code: str) -> int:
    """Brackets opened and not closed on the line (negative: it closes more than it opens)."""
    return sum(c in _OPEN for c in code) - sum(c in _CLOSE for c in code)


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip(" \t"))


def _next_code_line(suffix: str) -> str | None:
    """The suffix's first non-blank, non-comment line after the gap's own line."""
    for line in suffix.split("\n")[1:]:
        if line.strip() and not line.lstrip().startswith("#"):
            return line
    return None


def opens(line: str) -> bool:
    """Whether a whole line opens something the next line must continue: a block (`if x:`,
    `try:`), an unclosed bracket (`f(`, `x = [a,`) or a backslash continuation."""
    code = _code(line)
    stripped = code.strip()
    if not stripped:
        return False
    if stripped.endswith("\\") or _depth(code) > 0:
        return True
    return stripped.endswith(":") and bool(_BLOCK.match(stripped))


def fits_suffix(line_start: str, middle: str, suffix: str) -> bool:
    """Whether a single-line middle fits the shape of the code after it.

    `line_start`: the gap's line before the gap (the prefix after its last newline); the line
    is line_start + middle + the suffix's first line. False when the line opens a block or a
    bracket and the next code line is not indented deeper (or a closing bracket), or when the
    next code line is indented deeper and the line opens nothing while the line itself starts
    at bracket depth zero as far as it shows (the line is not a closing bracket's line).
    """
    line = line_start + middle + suffix.split("\n", 1)[0]
    if not line.strip():
        return True
    after = _next_code_line(suffix)
    if after is None:
        return True
    deeper = _indent(after) > _indent(line)
    closes = after.lstrip()[:1] in _CLOSE
    if opens(line):
        return deeper or closes
    # A deeper next line needs an opener, unless this line continues an open bracket itself
    # (its own closing brackets say so) or a statement's continuation (`and`, `or`, `+` ...).
    code = _code(line)
    if deeper and _depth(code) == 0 and not code.rstrip().endswith((",", "+", "-", "and", "or")):
        return code.lstrip()[:1] in _CLOSE
    return True


def keep_fitting(line_start: str, middles: list[str], suffix: str) -> list[str]:
    """The middles that fit the suffix (fits_suffix); all of them when none does, so that a
    fill always has its candidates to score."""
    kept = [m for m in middles if fits_suffix(line_start, m, suffix)]
    return kept or middles
