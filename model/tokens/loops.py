"""Is the model repeating itself? A rule on the text written so far, for every engine (torch-free).

Small models often fall into a loop and write it until `max_new_tokens`: the page's own
`import os ... def main():` example repeated `[output file]` 256 tokens long, and `is_prime`
climbed an `if n == 2: ... if n == 3: ...` ladder to the limit. Two rules, both on the tail of
the text (what the user sees), so they hold whatever the tokenizer:

1. **A cycle**: the text ends with one block of 1-256 characters written again and again, at
   least 3 times and over at least 200 characters (`[output file]` x 16, a line x 4).
2. **A ladder**: the last lines follow one pattern of 1-4 lines, at least 8 times over and 16
   lines at least, when their numbers and constants (True, False, None) are read as one
   (`if n == 2:` / `return True`, then 3, 4, ...). Blank lines do not count.

A long run of one character (a line of `=`) needs 200 of them; a table of 16 rows that differ
only in their numbers would count as a ladder, which is why the rule can be turned off
(STOP_LOOPS=off).
"""

from __future__ import annotations

import re

MIN_CYCLE_CHARS = 200
MIN_CYCLE_REPEATS = 3
MAX_CYCLE = 256
MIN_LADDER_REPEATS = 8
MIN_LADDER_LINES = 16
MAX_LADDER_PERIOD = 4
TAIL = MAX_CYCLE * MIN_CYCLE_REPEATS + MIN_CYCLE_CHARS
KEY = 8  # characters looked up to find where a cycle could start

# What changes from rung to rung of a ladder: its numbers, and the constants it answers with.
_NUMBER = re.compile(r"\d+|\b(?:True|False|None|true|false|null)\b")


class LoopGuard:
    """Feed it the text as it streams; `looping` turns True once a rule above holds."""

    def __init__(self) -> None:
        self._tail = ""
        self._lines: list[str] = []  # complete, non-blank lines, numbers read as one
        self._partial = ""
        self.looping = False

    def feed(self, delta: str) -> bool:
        if self.looping or not delta:
            return self.looping
        self._tail = (self._tail + delta)[-TAIL:]
        *done, self._partial = (self._partial + delta).split("\n")
        for line in done:
            if line.strip():
                self._lines.append(_NUMBER.sub("0", line.strip()))
        del self._lines[: -MIN_LADDER_LINES * MAX_LADDER_PERIOD]
        self.looping = self._cycle() or (bool(done) and self._ladder())
        return self.looping

    def _cycle(self) -> bool:
        tail = self._tail
        n, k = len(tail), min(KEY, len(tail))
        key, low = tail[-k:], max(0, len(tail) - k - MAX_CYCLE)
        # A cycle of period p has its last characters again p earlier: look only there (in
        # ordinary code the last 8 characters seldom recur, so this costs a few µs a token).
        pos = tail.rfind(key, low, n - 1)
        while pos != -1:
            period = n - k - pos
            repeats = max(MIN_CYCLE_REPEATS, -(-MIN_CYCLE_CHARS // period))
            if period * repeats <= n and tail[-period * repeats :] == tail[-period:] * repeats:
                return True
            pos = tail.rfind(key, low, pos + k - 1)
        return False

    def _ladder(self) -> bool:
        lines = self._lines
        for period in range(1, MAX_LADDER_PERIOD + 1):
            need = max(MIN_LADDER_LINES, period * MIN_LADDER_REPEATS)
            if len(lines) < need:
                continue
            window = lines[-need:]
            if all(window[i] == window[i % period] for i in range(need)):
                return True
        return False
