"""Per-request sampling for transformers' continuous batching (imports torch).

One logits processor does what generate() does per request: repetition penalty, the token
healing constraint (model/tokens/healing.py), then temperature, top-p and the draw. Greedy requests
(temperature 0) stop before the draw, so greedy and sampled requests share one batch and argmax
picks each row's token: a sampled row leaves only its drawn token. transformers' own CB warpers would need a sampling batch of their
own, and on a CPU their per-step work cost more than the model: a full sort of every row for
top-p (5.6 ms for 8 x 8,192 logits) and torch.multinomial (2.3 ms), against ~5 ms for the
tiny model's forward (bench/RESULTS.md).
"""

from __future__ import annotations

from typing import ClassVar

import torch
from transformers import RepetitionPenaltyLogitsProcessor
from transformers.generation.continuous_batching import cb_logits_processors as cblp

from model.tokens.healing import HealingProcessor
from model.tokens.logprobs import RecordBook, records
from model.tokens.token_stream import EndHold

TOP_K_FIRST = 64  # top-p looks here first; a row whose nucleus is wider is sorted in full


def nucleus_sample(probs: torch.Tensor, top_p: torch.Tensor, k: int = TOP_K_FIRST) -> torch.Tensor:
    """One token id per row of `probs` [rows, vocab], drawn from the row's top-p nucleus.

    The nucleus is generate()'s (TopPLogitsWarper): the most likely tokens, in order, while the
    mass ranked above them is below top_p. When the most likely token alone holds top_p (most
    steps at a low temperature), that token is the nucleus. When the k most likely tokens hold
    it, the nucleus lies among them, so only they are looked at; other rows are sorted in full.
    top_p >= 1 keeps every token and needs no sort at all.
    """
    dev = probs.device
    out = torch.empty(probs.size(0), dtype=torch.long, device=dev)
    top_p = top_p.to(dev)
    every = top_p >= 1.0
    if every.any():
        r = every.nonzero().squeeze(1)
        idx = torch.arange(probs.size(1), device=dev).expand(len(r), -1)
        out[r] = _draw(probs[r], idx, top_p[r], ordered=False)
    # The most likely token alone already holds top_p: the nucleus is that one token.
    top1, arg1 = probs.max(dim=-1)
    one = ~every & (top1 >= top_p)
    out[one] = arg1[one]
    rest = ~every & ~one
    if not rest.any():
        return out
    r = rest.nonzero().squeeze(1)
    vals, idx = probs[r].topk(min(k, probs.size(1)), dim=-1)
    inside = vals.sum(-1) >= top_p[r]
    if inside.any():
        out[r[inside]] = _draw(vals[inside], idx[inside], top_p[r][inside])
    wide = r[~inside]
    if wide.numel():
        vals, idx = probs[wide].sort(dim=-1, descending=True)
        out[wide] = _draw(vals, idx, top_p[wide])
    return out


def _draw(vals, idx, top_p, ordered: bool = True) -> torch.Tensor:
    """Inverse-CDF draw per row among `vals` (descending when `ordered`, then cut at top_p)."""
    if ordered:
        above = vals.cumsum(-1) - vals  # the mass ranked above each token
        vals = torch.where(above < top_p[:, None], vals, torch.zeros_like(vals))
    cdf = vals.cumsum(-1)
    u = torch.rand(len(vals), 1, dtype=cdf.dtype, device=cdf.device) * cdf[:, -1:]
    pos = torch.searchsorted(cdf, u, right=True).clamp_(max=vals.size(1) - 1)
    return idx.gather(1, pos).squeeze(1)


class _History:
    """One request's prompt + generated ids as a growing tensor, extended by the new tail."""

    __slots__ = ("_np", "ids", "n")

    def __init__(self) -> None:
        self.ids = torch.empty(0, dtype=torch.long)
        self._np = self.ids.numpy()  # the same memory: numpy writes a few ids ~100x faster
        self.n = 0

    def of(self, state) -> torch.Tensor:
        prompt, generated = state.initial_tokens, state.generated_tokens
        total = len(prompt) + len(generated)
        if total < self.n:  # not this request's history any more: start over
            self.n = 0
        if total > self.n:
            # A soft reset moves generated ids into initial_tokens; the concatenation, and so
            # the tail we need, stays the same.
            tail = (
                generated[self.n - len(prompt) :]
                if self.n >= len(prompt)
                else [*prompt[self.n :], *generated]
            )
            if total > self.ids.numel():
                grown = torch.empty(max(2 * total, 64), dtype=torch.long)
                grown[: self.n] = self.ids[: self.n]
                self.ids, self._np = grown, grown.numpy()
            self._np[self.n : total] = tail
            self.n = total
        return self.ids[:total]


class RequestSamplingCB(cblp.ContinuousBatchingLogitsProcessor):
    """repetition_penalty, token healing, temperature and top_p of each request, then its draw.

    transformers gives a CB processor one int32 slot per row; the penalty travels there, and
    the rest (token histories, temperatures, top-p) is kept by prepare_tensor_args() for the
    __call__ of the same step. That is only valid in synchronous batching without CUDA graphs,
    which build_cb_config() enforces.
    """

    supported_kwargs: ClassVar[dict[str, type]] = {
        "repetition_penalty": float,
        "temperature": float,  # 0: greedy
        "top_p": float,
        "healing": HealingProcessor,  # the first tokens must rebuild the backed-off text
        "logprobs": int,  # record this row's token logprob and this many alternatives
        "hold": EndHold,  # end tokens this row may not write yet (min_tokens, ignore_eos)
    }
    ignored_kwargs: ClassVar[tuple[str, ...]] = ()

    def __init__(self, processor: RepetitionPenaltyLogitsProcessor) -> None:
        self.penalty = float(processor.penalty)
        # (row, token id) of every history token of the penalised rows, for the next __call__.
        self._rows: torch.Tensor | None = None
        self._cols: torch.Tensor | None = None
        self._sampled: torch.Tensor | None = None  # rows that draw, with their settings
        self._healing: list[tuple[int, HealingProcessor, list[int]]] = []  # row, rule, generated
        self._held: list[tuple[int, tuple[int, ...]]] = []  # row, end ids it may not write yet
        self._temperature = self._top_p = torch.empty(0)
        # Request id -> its history. Rebuilding each history from Python lists every step was
        # O(context) per row, the worker's largest single cost at 8 streams of 256 tokens.
        self._histories: dict[str, _History] = {}
        self._logprob_rows: list[tuple[int, str, int]] = []  # row, request id, alternatives
        self.logprobs = RecordBook()  # the router reads each request's records from here

    def fill_defaults(self, int32_tensor: torch.Tensor) -> None:
        default = torch.full_like(int32_tensor, self.penalty, dtype=torch.float32)
        int32_tensor.copy_(default.view(dtype=torch.int32))

    def prepare_tensor_args(self, requests_with_new_token) -> torch.Tensor:
        penalties, rows, lengths, parts, kept = [], [], [], [], {}
        sampled, temperatures, top_ps, healing, held = [], [], [], [], []
        self._logprob_rows = []
        for row, request in enumerate(requests_with_new_token):
            state = request.state
            kwargs = state.logit_processor_kwargs
            if kwargs.get("logprobs") is not None:
                self._logprob_rows.append((row, state.request_id, int(kwargs["logprobs"])))
            rule = kwargs.get("healing")
            if rule is not None and len(state.generated_tokens) < len(rule.removed) + 1:
                # Only the first tokens can still be constrained; a soft reset moves them into
                # initial_tokens, so read them from the whole history.
                ids = [*state.initial_tokens, *state.generated_tokens]
                healing.append((row, rule, ids[rule.prompt_len :]))
            hold = kwargs.get("hold")
            if hold is not None and (blocked := hold.blocked(len(state.generated_tokens))):
                held.append((row, blocked))
            p = kwargs.get("repetition_penalty", self.penalty)
            penalties.append(p)
            if kwargs.get("temperature", 0.0) > 0:
                sampled.append(row)
                temperatures.append(kwargs["temperature"])
                top_ps.append(kwargs.get("top_p", 1.0))
            if p == 1.0:
                continue
            history = kept[state.request_id] = self._histories.get(state.request_id) or _History()
            ids = history.of(state)
            if ids.numel():
                rows.append(row)
                lengths.append(ids.numel())
                parts.append(ids)
        self._histories = kept  # requests not in this step are rebuilt if they come back
        if parts:
            self._rows = torch.repeat_interleave(torch.tensor(rows), torch.tensor(lengths))
            self._cols = torch.cat(parts)
        else:
            self._rows = self._cols = None
        self._healing = healing
        self._held = held
        self._sampled = torch.tensor(sampled, dtype=torch.long) if sampled else None
        self._temperature = torch.tensor(temperatures, dtype=torch.float32)
        self._top_p = torch.tensor(top_ps, dtype=torch.float32)
        return torch.tensor(penalties, dtype=torch.float32).view(dtype=torch.int32)

    def __call__(self, scores: torch.Tensor, tensor_arg: torch.Tensor) -> torch.Tensor:
        if self._rows is not None:
            # One gather and one scatter for the whole batch. Repeated ids gather the same
            # score and write the same value back, so they need no dedup.
            rows, cols = self._rows.to(scores.device), self._cols.to(scores.device)
            keep = rows < scores.size(0)
            rows, cols = rows[keep], cols[keep]
            penalty = tensor_arg[: scores.size(0)].view(dtype=torch.float32).to(scores.dtype)
            s = scores[rows, cols]
            scores[rows, cols] = torch.where(s < 0, s * penalty[rows], s / penalty[rows])
        for row, rule, generated in self._healing:
            blocked = rule.blocked(generated, scores.size(-1)) if row < scores.size(0) else None
            if blocked is not None:
                scores[row, blocked.to(scores.device)] = -float("inf")
        asked = [(r, rid, k) for r, rid, k in self._logprob_rows if r < scores.size(0)]
        if asked:  # the model's view, before temperature and top-p reshape it
            lp_rows = torch.tensor([r for r, _, _ in asked], device=scores.device)
            logprobs = scores[lp_rows].float().log_softmax(-1)
        for row, blocked in self._held:  # after the logprobs: they show the model's view
            if row < scores.size(0):
                scores[row, list(blocked)] = -float("inf")
        if self._sampled is not None:
            dev = scores.device
            keep = self._sampled < scores.size(0)
            rows = self._sampled[keep].to(dev)
            temperature = self._temperature[keep].to(dev)
            probs = scores[rows].float().div_(temperature[:, None]).softmax(-1)
            tokens = nucleus_sample(probs, self._top_p[keep])
            # The batch takes the argmax of each row: leave the drawn token alone on top.
            scores[rows] = torch.finfo(scores.dtype).min
            scores[rows, tokens] = 0
        if asked:  # every row's token is now its argmax, drawn or greedy
            chosen = scores[lp_rows].argmax(-1)
            for (_, rid, _), rec in zip(
                asked, records(logprobs, chosen, [k for *_, k in asked]), strict=True
            ):
                self.logprobs.add(rid, rec)
        return scores
