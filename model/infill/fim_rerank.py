"""Fill-in-the-middle for any causal LM, without FIM training: sample middles, rerank by suffix.

A left-to-right model cannot see the code after the gap while it writes, but it can judge it. So:
sample K candidate middles from the prefix (one batched decode that shares the prefix's KV
cache), end each at the line's end (single-line) or where it starts the suffix, and score each
by log p(suffix | prefix + middle), all candidates in one batched forward over the prefix's
cache. The pick adds log p(middle | prefix) to that ("joint"): the suffix term alone favours odd
middles that happen to predict the suffix (bench/RESULTS.md, issue 13). The suffix is cut to its
first lines (and tokens): they carry the signal, and the cost grows with their length.

Works on an in-process transformers model and tokenizer (torch: this is the model side).

    filler = RerankFiller(model, tokenizer, RerankSettings(k=8))
    fill = filler(prefix, suffix, single_line=True)
    fill.best().text, fill.candidates          # or filler.fill(prefix, suffix, single_line=...)
"""

from __future__ import annotations

import copy
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from compat.transformers_cache import all_roomy, fork_rows, give_room, row_tail
from model.engines.kernel import logsumexp
from model.infill.rerank import (  # the model-free half, shared with model/engines/remote_fill.py
    Candidate,
    Fill,
    RerankSettings,
    candidate_middles,
    cut_middle,
    shorter_middles,
    split_score,
    suffix_head,
)
from model.prompts.templates import fim_stop_sequences
from model.tokens.healing import heal
from model.tokens.token_stream import model_eos_ids


class Cancelled(Exception):
    """The fill was cancelled between two decode steps."""


@dataclass
class Sampled:
    """What sampling leaves for scoring: each row's text (None: dropped), the greedy row, the
    steps taken, and, where the scoring can start from it, each candidate row's drawn tokens,
    their log-probabilities and the keys/values computed for them."""

    texts: list[str | None]
    greedy_row: int
    steps: int
    ids: list[list[int]] = field(default_factory=list)
    logprobs: list[list[float]] = field(default_factory=list)  # log p(token | before), raw
    tails: dict[int, list] = field(default_factory=dict)  # row -> compat row_tail()


class RerankFiller:
    """Fills one gap at a time with a model already loaded (eval mode, any device)."""

    def __init__(self, model, tokenizer, settings: RerankSettings):
        self.model = model
        self.tokenizer = tokenizer
        self.settings = settings
        self._cancel = None  # the current fill's CancelToken
        self.device = next(model.parameters()).device
        self.eos_ids = set(model_eos_ids(model, tokenizer))
        s = self.settings
        from model.engines.loading import context_length

        self.context = min(context_length(model.config, tokenizer), s.max_context or 1 << 62)
        if self.settings.proposal == "chat" and not getattr(tokenizer, "chat_template", None):
            raise ValueError("proposal='chat' needs a model with a chat template")

    # -- the fill -------------------------------------------------------------------------------

    @torch.inference_mode()
    def __call__(self, prefix: str, suffix: str, *, single_line: bool, cancel=None) -> Fill:
        """`cancel`: anything with a `cancelled` flag (a CancelToken), checked at every step;
        raises Cancelled once it is set."""
        s = self.settings
        self._cancel = cancel
        start = time.perf_counter()
        stops = fim_stop_sequences(prefix, suffix, single_line=single_line)
        head = suffix_head(suffix, s.suffix_lines)
        room = s.max_new_tokens + s.suffix_tokens + 8
        # The scoring context: the prefix, backed off before its trailing whitespace token(s)
        # ("\n" alone is rare in training; "\n    " is one token), which the middle re-creates.
        plain = self._ids(prefix, room)
        healing = heal(self.tokenizer, plain)
        ctx_ids, removed = healing.input_ids, healing.removed
        cache, last = self._prefill(ctx_ids)
        t_prefill = time.perf_counter() - start
        if s.proposal == "chat":
            # The chat request gets a cache of its own; the plain one is kept for scoring.
            seed_ids = self._chat_ids(prefix, suffix, room)
            chat_healing = heal(self.tokenizer, seed_ids)
            sample_cache, sample_last = self._prefill(chat_healing.input_ids)
            sample_healing = chat_healing
        else:
            sample_cache, sample_last = copy.deepcopy(cache), last
            sample_healing = healing
        drawn = self._sample(
            sample_cache,
            sample_last,
            sample_healing,
            single_line=single_line,
            stops=stops,
            keep_tails=s.proposal == "plain",  # the chat proposal sampled from another context
        )
        texts, greedy_row, steps = drawn.texts, drawn.greedy_row, drawn.steps
        sampled = time.perf_counter()
        if cancel is not None and cancel.cancelled:
            raise Cancelled
        middles, greedy_text = candidate_middles(
            texts,
            suffix,
            removed=sample_healing.removed,
            greedy_row=greedy_row,
            single_line=single_line,
            stops=stops,
            max_lines=s.max_lines,
        )
        scores = self._score(cache, last, removed, middles, head, drawn)
        done = time.perf_counter()
        candidates = tuple(
            Candidate(m, sl, ml, greedy=m == greedy_text)
            for m, (sl, ml) in zip(middles, scores, strict=True)
        )
        return Fill(
            candidates,
            sample_seconds=sampled - start,
            score_seconds=done - sampled,
            prompt_tokens=len(ctx_ids),
            new_tokens=steps,
            timings={"prefill": t_prefill},
        )

    def fill(self, prefix: str, suffix: str, *, single_line: bool) -> str:
        """Just the chosen middle."""
        return self(prefix, suffix, single_line=single_line).best(self.settings.score_by).text

    # -- steps ----------------------------------------------------------------------------------

    def _ids(self, text: str, room: int) -> list[int]:
        ids = self.tokenizer(text, add_special_tokens=True)["input_ids"]
        keep = self.context - room
        return ids[-keep:] if len(ids) > keep else ids  # the code nearest the gap matters most

    def _chat_ids(self, prefix: str, suffix: str, room: int) -> list[int]:
        ask = (
            "Complete the Python code: write the missing code at <FILL_HERE>, so that the "
            "code after it still follows.\n\n```python\n" + prefix + "<FILL_HERE>" + suffix + "```"
        )
        text = self.tokenizer.apply_chat_template(
            [{"role": "user", "content": ask}], tokenize=False, add_generation_prompt=True
        )
        return self._ids(text + "```python\n" + prefix, room)

    def _prefill(self, ids: list[int]):
        out = self.model(
            input_ids=torch.tensor([ids], device=self.device), use_cache=True, logits_to_keep=1
        )
        give_room(out.cache)  # each row's steps written in place, not the cache copied per step
        return out.cache, out.logits[:, -1].float()

    def _sample(
        self, cache, last, healing, *, single_line: bool, stops: Sequence[str], keep_tails: bool
    ) -> Sampled:
        """K continuations of the cached context. With `keep_tails`, each candidate row's keys
        and values past the prefix are kept as it ends, with its tokens' log-probabilities, so
        that scoring need not compute its middle again."""
        s = self.settings
        k = s.k
        start = cache.get_seq_length()
        cache.batch_repeat_interleave(k)
        keep_tails = keep_tails and all_roomy(cache)
        logprobs: list[list[float]] = [[] for _ in range(k)]
        tails: dict[int, list] = {}
        logits = last.expand(k, -1)
        gen = torch.Generator(device="cpu").manual_seed(s.seed)
        rows = list(range(k))  # the original row of each live batch row
        ids: list[list[int]] = [[] for _ in range(k)]
        texts = [""] * k
        processor = healing.processor
        finished: dict[int, int] = {}  # row -> the step its middle ended at
        steps = 0
        for step in range(s.max_new_tokens):
            if self._cancel is not None and self._cancel.cancelled:
                raise Cancelled
            scores = logits.float().clone()
            if processor is not None:
                for i, row in enumerate(rows):
                    blocked = processor.blocked(ids[row], scores.size(-1))
                    if blocked is not None:
                        scores[i, blocked.to(scores.device)] = -float("inf")
            greedy = [s.greedy_first and row == 0 for row in rows]
            tokens = self._draw(scores, greedy=greedy, gen=gen)
            if keep_tails:  # each drawn token's log p under the model, before any warping
                raw = logits.float()
                picked = raw.gather(1, tokens.view(-1, 1).to(raw.device)).squeeze(1)
                for row, value in zip(rows, (picked - logsumexp(raw)).tolist(), strict=True):
                    logprobs[row].append(value)
            keep = []
            for i, row in enumerate(rows):
                token = int(tokens[i])
                if token not in self.eos_ids:
                    ids[row].append(token)
                    texts[row] = self.tokenizer.decode(ids[row], skip_special_tokens=True)
                    middle = texts[row][len(healing.removed) :]
                    ended = cut_middle(middle, single_line=single_line, stops=stops)[1]
                    if not ended and middle.count("\n") < s.max_lines:
                        keep.append(i)
                        continue
                finished[row] = step + 1
            steps = step + 1
            # Once the greedy row or half the rows have ended, a row still going at twice the
            # longest ended one is a ramble, not a better candidate: stop rather than wait.
            settled = len(finished) * 2 >= k or (s.greedy_first and 0 in finished)
            if settled and steps >= s.ramble * max(finished.values()) + 2:
                keep = []
            if keep_tails:  # candidates leaving the batch: their keys/values past the prefix
                for i, row in enumerate(rows):
                    if i not in keep and (row in finished or (s.greedy_first and row == 0)):
                        tails[row] = row_tail(cache, i, start)
            if not keep:
                break
            if len(keep) < len(rows):
                cache.batch_select_indices(torch.tensor(keep, device=self.device))
                tokens = tokens[keep]
                rows = [rows[i] for i in keep]
            out = self.model(
                input_ids=tokens.view(-1, 1).to(self.device), cache=cache, use_cache=True
            )
            cache, logits = out.cache, out.logits[:, -1]
        else:  # out of steps: the greedy row may still be going
            if keep_tails and s.greedy_first and 0 in rows:
                tails[0] = row_tail(cache, rows.index(0), start)
        if finished:  # unfinished rows are dropped while others ended (the greedy one stays)
            greedy_row = 0 if s.greedy_first else -1
            texts = [t if r in finished or r == greedy_row else None for r, t in enumerate(texts)]
        return Sampled(texts, 0 if s.greedy_first else -1, steps, ids, logprobs, tails)

    def _draw(self, scores: torch.Tensor, *, greedy: list[bool], gen) -> torch.Tensor:
        s = self.settings
        tokens = scores.argmax(-1).cpu()
        sampled = [i for i, g in enumerate(greedy) if not g]
        if not sampled or s.temperature <= 0:
            return tokens
        vals, idx = scores[sampled].topk(min(s.top_k, scores.size(-1)), dim=-1)
        probs = (vals / s.temperature).softmax(-1).cpu()
        above = probs.cumsum(-1) - probs  # the mass ranked above each token
        probs = torch.where(above < s.top_p, probs, torch.zeros_like(probs))
        pick = torch.multinomial(probs, 1, generator=gen).squeeze(1)
        tokens[sampled] = idx.cpu().gather(1, pick[:, None]).squeeze(1)
        return tokens

    def _score(self, cache, last, removed: str, middles: list[str], head: str, drawn: Sampled):
        """(log p(suffix head | prefix + middle), log p(middle | prefix)) per middle, batched."""
        s = self.settings
        rests = [removed + m + head for m in middles]
        enc = self.tokenizer(rests, add_special_tokens=False, return_offsets_mapping=True)
        rows, is_suffix = [], []
        for m, ids, offsets in zip(middles, enc["input_ids"], enc["offset_mapping"], strict=True):
            boundary = len(removed) + len(m)
            flags = [end > boundary for _, end in offsets]
            if head:
                first = flags.index(True) if True in flags else len(flags)
                ids, flags = ids[: first + s.suffix_tokens], flags[: first + s.suffix_tokens]
            rows.append(ids)
            is_suffix.append(flags)
        if max(map(len, rows), default=0) == 0:
            return [(0.0, 0.0)] * len(rows)
        counts, sources = _reuse(rows, drawn)
        # Each row enters with its first counts[r] tokens already computed: its sampled row's
        # keys/values (left-padded to the longest, masked) and the log-probabilities they were
        # drawn at; then the rest of the row, right-padded (pads after real tokens are never
        # seen by them).
        fed = [r[c:] for r, c in zip(rows, counts, strict=True)]
        n, width = len(fed), max(len(r) for r in fed)
        pad = self.tokenizer.pad_token_id or 0
        batch = torch.full((n, width), pad, dtype=torch.long)
        for i, r in enumerate(fed):
            batch[i, : len(r)] = torch.tensor(r, dtype=torch.long)
        kwargs = {}
        if any(counts):
            fork_rows(cache, [drawn.tails.get(src) for src in sources], counts)
            most, past = max(counts), cache.get_seq_length()
            mask = torch.ones((n, past + width), dtype=torch.long)
            for i, c in enumerate(counts):
                mask[i, : most - c] = 0
            starts = torch.tensor([past - most + c for c in counts])
            kwargs = {"attention_mask": mask, "position_ids": starts[:, None] + torch.arange(width)}
        else:
            cache.batch_repeat_interleave(n)  # the prefix's own cache: this is its last use
        out = self.model(
            input_ids=batch.to(self.device),
            cache=cache,
            use_cache=True,
            **{k: v.to(self.device) for k, v in kwargs.items()},
        )
        # log p(token) = its logit - logsumexp(logits): read once, where log_softmax over all
        # n x width x vocab logits (and a copy to put `last` in front) wrote 40 MB per fill.
        logits = out.logits.float()
        targets = batch.to(logits.device)
        picked = logits[:, :-1].gather(2, targets[:, 1:, None]).squeeze(2)
        tail = (picked - logsumexp(logits)[:, :-1]).tolist()  # the last position's: a few us
        first = last.float().log_softmax(-1)[0]  # the prefix's next token, for rows that take none
        scores = []
        for i, (row, flags, c) in enumerate(zip(rows, is_suffix, counts, strict=True)):
            if not row:
                scores.append((0.0, 0.0))
                continue
            known = drawn.logprobs[sources[i]][: c + 1] if c else [float(first[row[0]])]
            logp = known + tail[i][: len(row) - c - 1]
            scores.append(split_score(logp[: len(flags)], flags))
        return scores


def _shared(a: Sequence[int], b: Sequence[int]) -> int:
    """How many leading tokens two sequences share."""
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


def _reuse(rows: list[list[int]], drawn: Sampled) -> tuple[list[int], list[int]]:
    """(tokens each scored row takes from a sampled row's cache, that sampled row; -1: none).

    A scored row (middle + suffix head, tokenized afresh) starts with the tokens some sampled
    row drew, usually its whole middle. Their keys/values and log-probabilities were computed
    then: up to one token short of the shared part (the next token's log p comes from the
    logits after the last reused one) and no further than that row's cache went."""
    counts, sources = [], []
    for row in rows:
        best, source = 0, -1
        for src, tail in drawn.tails.items():
            usable = min(_shared(row, drawn.ids[src]) - 1, tail[0][0].shape[1],
                         len(drawn.logprobs[src]) - 1)  # fmt: skip
            if usable > best:
                best, source = usable, src
        counts.append(best)
        sources.append(source)
    return counts, sources


__all__ = ["Cancelled", "Candidate", "Fill", "RerankFiller", "RerankSettings", "Sampled",
           "cut_middle", "shorter_middles", "suffix_head"]  # fmt: skip
