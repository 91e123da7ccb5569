"""Fill-in-the-middle by reranking, the half that needs no model: settings, the candidates'
middles, their scores and the pick, and the events a fill yields.

Two drivers sample and score: model/infill/fim_rerank.py on an in-process model (torch), and
model/engines/remote_fill.py on a server that can score a prompt (vLLM's `echo` + `logprobs`). Both
cut the sampled texts into middles, add the shorter ends and pick with the rules here, so a
fill is the same whichever runs it.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Literal

from model.engine import Delta, Done, Event, GenerationRequest
from model.tokens.stops import StopMatcher

Proposal = Literal["plain", "chat"]
ScoreBy = Literal["suffix", "joint", "greedy"]

# A candidate line longer than this is cut (the longest canonical HumanEval line is 50 tokens).
MAX_LINE_TOKENS = 64
# The context a fill reads, the code nearest the gap: 512 tokens keep 424 of the prefix (the
# rest is room for the line and the scored suffix). Every candidate row attends to (and
# copies) the prefix's KV cache, so its length sets the prefill and much of each decode step:
# on 60 editor-sized gaps (3,000 characters before, ~800 tokens) 512 against 2,048 took the
# p50 to 0.69x with exact match 11/60 against 9/60 (edit similarity 0.435 against 0.451), and
# on the 34 HumanEval lines whose prefix is longer 18/34 against 16/34 (the other 999 never
# reach the limit; bench/RESULTS.md, issue 24). 256 lost exact matches.
MAX_CONTEXT_TOKENS = 512


@dataclass(frozen=True)
class RerankSettings:
    k: int  # candidates sampled per fill (row 0 greedy when greedy_first): FIM_CANDIDATES
    temperature: float = 0.8
    top_p: float = 0.95
    top_k: int = 50  # top-p looks only among these: a full sort of 49k logits per row is slow
    max_new_tokens: int = 48
    suffix_lines: int = 3  # the suffix's first lines (after the gap's own) that are scored
    suffix_tokens: int = 32  # and at most this many of its tokens
    # Multi-line: a row ends after this many lines, and each line end is a candidate end of its
    # own (shorter_middles): a model without FIM training seldom stops where the suffix starts.
    max_lines: int = 8
    greedy_first: bool = True  # row 0 takes the argmax: the plain left-to-right fill is a candidate
    # Once the greedy row or half the rows have ended, rows still going at this many times the
    # longest ended one (+2 tokens) are dropped as rambles.
    ramble: float = 2.0
    # "joint": log p(middle | prefix) + log p(suffix | prefix + middle), i.e. the candidate
    # the model finds likeliest given both sides; measured better than the suffix term alone
    # (bench/RESULTS.md), which favours odd middles that happen to predict the suffix.
    score_by: ScoreBy = "joint"
    # "plain": sample from the code before the gap; "chat": an instruct model sees the whole
    # code with the gap in a user turn and answers with the code, seeded with the prefix.
    proposal: Proposal = "plain"
    seed: int = 0
    # Tokens of the code before the gap that are read (the nearest ones); None: the model's
    # context. Every candidate gets a copy of the prefix's KV cache, so this bounds the memory.
    max_context: int | None = None


@dataclass(frozen=True)
class Candidate:
    text: str  # the middle
    suffix_logprob: float  # log p(suffix head | prefix + middle), nats
    middle_logprob: float  # log p(middle | prefix), nats, as re-tokenized for scoring
    greedy: bool = False  # the argmax row's middle

    @property
    def joint_logprob(self) -> float:
        return self.suffix_logprob + self.middle_logprob


@dataclass(frozen=True)
class Fill:
    candidates: tuple[Candidate, ...]  # unique middles, in the order first sampled
    sample_seconds: float
    score_seconds: float
    prompt_tokens: int
    new_tokens: int  # decode steps taken (the longest candidate)
    timings: dict = field(default_factory=dict)

    def best(self, by: ScoreBy = "joint") -> Candidate:
        if by == "greedy":
            return next((c for c in self.candidates if c.greedy), self.candidates[0])
        key = (lambda c: c.suffix_logprob) if by == "suffix" else (lambda c: c.joint_logprob)
        return max(self.candidates, key=key)

    @property
    def seconds(self) -> float:
        return self.sample_seconds + self.score_seconds


def cut_middle(text: str, *, single_line: bool, stops: Sequence[str]) -> tuple[str, bool]:
    """(the middle, whether it is finished) from generated text.

    Single-line: the text up to the first newline after some code (leading blank lines are
    dropped: a blank line is never the fill of a line). Otherwise: up to the first stop.
    """
    if single_line:
        body = text.lstrip("\n")
        if "\n" in body.lstrip():
            head = body.lstrip()
            return body[: len(body) - len(head) + head.index("\n")], True
        return body, False
    cuts = [i for i in (text.find(s) for s in stops if s) if i != -1]
    return (text[: min(cuts)], True) if cuts else (text, False)


def shorter_middles(middle: str, suffix: str, *, single_line: bool, lines: int = 8) -> list[str]:
    """Where a middle could end earlier, as candidates of their own; the score picks the end.

    Single-line: a middle that ends with the code after the gap on its line may have re-written
    it (`r ** 2` before ` ** 2`), or not (`sum(x)` before `)`): both go in. Multi-line: a model
    without FIM training rarely writes the suffix's next line to stop at, so each of its first
    `lines` line ends is a candidate end (`return a + b` rather than the example usage after).
    """
    if single_line:
        rest = suffix.split("\n", 1)[0].strip()
        body = middle.rstrip()
        shorter = body[: -len(rest)].rstrip() if rest and body.endswith(rest) else ""
        return [shorter] if shorter.strip() else []
    parts = middle.split("\n")
    ends = ("\n".join(parts[:i]).rstrip() for i in range(1, min(len(parts) - 1, lines) + 1))
    return list(dict.fromkeys(e for e in ends if e.strip() and e != middle))


def suffix_head(suffix: str, lines: int) -> str:
    """The suffix's own line plus its next `lines` non-blank lines (blank ones kept between)."""
    parts = suffix.split("\n")
    out, seen = [parts[0]], 0
    for line in parts[1:]:
        if seen >= lines:
            break
        out.append(line)
        seen += bool(line.strip())
    return "\n".join(out)


def infill_settings(request: GenerationRequest) -> RerankSettings:
    """The settings a served Infill request runs with (the worker's and a remote server's)."""
    spec, p = request.infill, request.params
    return RerankSettings(
        k=spec.candidates,
        max_new_tokens=min(p.max_new_tokens, MAX_LINE_TOKENS),
        seed=p.seed if p.seed is not None else 0,  # same code, same fill
        max_context=MAX_CONTEXT_TOKENS,
        # Rows still going 2 tokens past the longest ended one are dropped (the filler's
        # default waits to 2x). In process, 2 threads, interleaved (bench/RESULTS.md, issue 24
        # part 3): 1.25x against 1.0x on 100 editor-sized gaps 18 against 16 exact, p50 2.85
        # against 2.35 s; on 150 HumanEval lines 52 against 51, p50 1.80 against 1.46 s; 1.1x
        # 17/100 at 2.58 s. 1.0 is the one inside the editor budget of 2.5 s.
        ramble=1.0,
    )


def candidate_middles(
    texts: Iterable[str | None],
    suffix: str,
    *,
    removed: str,
    greedy_row: int,
    single_line: bool,
    stops: Sequence[str],
    max_lines: int,
) -> tuple[list[str], str | None]:
    """(unique middles in the order sampled, the greedy row's middle) from the sampled texts,
    each of which starts with the healed-away `removed` text; None rows were dropped."""
    middles: list[str] = []
    greedy_text = None
    for row, text in enumerate(texts):
        if text is None:
            continue
        middle = text[len(removed) :]
        middle, _ = cut_middle(middle, single_line=single_line, stops=stops)
        if row == greedy_row:
            greedy_text = middle
        shorter = shorter_middles(middle, suffix, single_line=single_line, lines=max_lines)
        for variant in (middle, *shorter):
            if variant not in middles:
                middles.append(variant)
    return middles, greedy_text


def split_score(logprobs: Sequence[float], is_suffix: Sequence[bool]) -> tuple[float, float]:
    """(suffix log-probability, middle log-probability): a scored row's tokens summed by side."""
    suf = sum(v for v, f in zip(logprobs, is_suffix, strict=True) if f)
    mid = sum(v for v, f in zip(logprobs, is_suffix, strict=True) if not f)
    return suf, mid


def fill_events(fill: Fill, settings: RerankSettings, stop: Sequence[str]) -> Iterator[Event]:
    """A finished fill as events: one Delta with the chosen middle (cut at a user's stop), Done."""
    matcher = StopMatcher(tuple(s for s in stop if s))
    middle = matcher.feed(fill.best(settings.score_by).text)
    middle += "" if matcher.stopped else matcher.flush()
    if middle:
        yield Delta(middle)
    reason = "length" if fill.new_tokens >= settings.max_new_tokens else "stop"
    yield Done(reason, fill.prompt_tokens, fill.new_tokens)
