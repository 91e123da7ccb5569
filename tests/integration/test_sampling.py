"""The batch's per-request sampler (model/tokens/sampling.py) against generate()'s own processors."""

from types import SimpleNamespace

import pytest
import torch
from transformers import (
    RepetitionPenaltyLogitsProcessor,
    TemperatureLogitsWarper,
    TopPLogitsWarper,
)

from model.tokens.sampling import RequestSamplingCB, nucleus_sample


def _request(rid, prompt, generated=(), **kwargs):
    state = SimpleNamespace(
        request_id=rid,
        initial_tokens=list(prompt),
        generated_tokens=list(generated),
        logit_processor_kwargs=kwargs,
    )
    return SimpleNamespace(state=state)


def _step(cb, requests, scores):
    return cb(scores.clone(), cb.prepare_tensor_args(requests))


def _generate_probs(scores, temperature, top_p):
    """The distribution generate() samples from: temperature, top-p, softmax."""
    s = TemperatureLogitsWarper(temperature)(None, scores.clone())
    if top_p < 1.0:
        s = TopPLogitsWarper(top_p)(None, s)
    return s.softmax(-1)


def test_repetition_penalty_matches_generates_per_row():
    """Rows with their own penalties and repeated ids get exactly generate()'s processor, step
    after step, while histories grow, a request leaves and comes back, and a soft reset moves
    generated ids into the prompt (the kept per-request histories must follow all of that)."""
    histories = [([5, 7, 7], [9, 5]), ([1, 2], []), ([3, 3, 3], [4]), ([8], [0])]
    penalties = [1.2, 1.0, 1.7, 1.3]
    requests = [
        _request(f"r{i}", prompt, generated, repetition_penalty=p)
        for i, ((prompt, generated), p) in enumerate(zip(histories, penalties, strict=True))
    ]
    states = [r.state for r in requests]
    cb = RequestSamplingCB(RepetitionPenaltyLogitsProcessor(1.2))
    torch.manual_seed(0)
    for step in range(6):
        batch = [r for i, r in enumerate(requests) if not (step == 2 and i == 0)]  # r0 sits out
        scores = torch.randn(len(batch), 12)
        got = _step(cb, batch, scores)
        for row, state in enumerate(r.state for r in batch):
            ids = torch.tensor([state.initial_tokens + state.generated_tokens])
            p = state.logit_processor_kwargs["repetition_penalty"]
            want = RepetitionPenaltyLogitsProcessor(p)(ids, scores[row : row + 1].clone())
            assert torch.equal(got[row], want[0]), (step, state.request_id)
        for state in (r.state for r in batch):
            state.generated_tokens.append((step * 5 + len(state.initial_tokens)) % 12)
        if step == 1:  # two new ids in one step
            states[3].generated_tokens.append(3)
        if step == 3:  # transformers' soft reset: same request id, generated ids become prompt
            s = states[2]
            s.initial_tokens, s.generated_tokens = s.initial_tokens + s.generated_tokens, []


@pytest.mark.parametrize("top_p", [0.3, 0.8, 0.95, 1.0])
@pytest.mark.parametrize("k", [3, 64])  # k=3: most nuclei are wider, so the full sort runs
def test_draws_follow_generates_distribution(top_p, k):
    """Token frequencies over 20,000 draws match temperature + TopPLogitsWarper + softmax, and
    no token outside generate()'s nucleus is ever drawn."""
    torch.manual_seed(1)
    scores = torch.randn(3, 40) * torch.tensor([[0.5], [2.0], [4.0]])  # flat to peaked rows
    want = _generate_probs(scores, 0.7, top_p)
    probs = (scores / 0.7).softmax(-1)
    n = 20_000
    draws = nucleus_sample(probs.repeat(n, 1), torch.full((3 * n,), top_p), k=k).view(n, 3)
    for row in range(3):
        freq = torch.bincount(draws[:, row], minlength=40).float() / n
        outside = want[row] == 0
        assert freq[outside].sum() == 0, (row, freq[outside].nonzero())
        assert (freq - want[row]).abs().max() < 0.015, row


def test_greedy_and_sampled_rows_share_a_batch():
    """Greedy rows keep their (penalised) scores for the batch's argmax; each sampled row is
    left with only its drawn token on top, which lies in that row's nucleus."""
    torch.manual_seed(2)
    scores = torch.randn(3, 50) * 3
    requests = [
        _request("g", [1, 2], repetition_penalty=1.3, temperature=0.0),
        _request("s", [4], repetition_penalty=1.0, temperature=0.5, top_p=0.9),
        _request("t", [7, 7], repetition_penalty=1.2, temperature=1.5, top_p=0.5),
    ]
    cb = RequestSamplingCB(RepetitionPenaltyLogitsProcessor(1.1))
    got = _step(cb, requests, scores)
    penalised = RepetitionPenaltyLogitsProcessor(1.3)(torch.tensor([[1, 2]]), scores[:1].clone())
    assert torch.equal(got[0], penalised[0])
    for row, (temperature, top_p, prompt, penalty) in enumerate(
        [(0.5, 0.9, [4], 1.0), (1.5, 0.5, [7, 7], 1.2)], start=1
    ):
        token = int(got[row].argmax())
        assert (got[row] > torch.finfo(got.dtype).min).sum() == 1  # only the drawn token
        base = RepetitionPenaltyLogitsProcessor(penalty)(
            torch.tensor([prompt]), scores[row : row + 1].clone()
        )
        assert _generate_probs(base, temperature, top_p)[0, token] > 0


def test_healing_holds_the_first_tokens_in_the_batch(model_dir):
    """A healed request's first token must rebuild the backed-off whitespace, greedy or
    sampled, in a batch beside an unconstrained row; once rebuilt, the row is free."""
    from transformers import AutoTokenizer

    from model.tokens.healing import heal

    tok = AutoTokenizer.from_pretrained(model_dir, local_files_only=True)
    healing = heal(tok, tok("def f(x):\n    ")["input_ids"])
    assert healing.active
    vocab = healing.processor.vocab
    allowed = vocab.allowed(healing.processor.removed)
    prompt = healing.input_ids
    torch.manual_seed(3)
    cb = RequestSamplingCB(RepetitionPenaltyLogitsProcessor(1.1))
    for _ in range(20):
        scores = torch.randn(3, len(vocab)) * 2
        requests = [
            _request("g", prompt, repetition_penalty=1.0, temperature=0.0,
                     healing=healing.processor),
            _request("s", prompt, repetition_penalty=1.0, temperature=1.0, top_p=1.0,
                     healing=healing.processor),
            _request("free", prompt, repetition_penalty=1.0, temperature=0.0),
        ]  # fmt: skip
        got = _step(cb, requests, scores)
        assert allowed[int(got[0].argmax())] and allowed[int(got[1].argmax())]
        assert torch.equal(got[2], scores[2])
    # Rebuilt by the very tokens healing backed off: from then on the row is free.
    original = tok("def f(x):\n    ")["input_ids"]
    rebuilt = _request(
        "g",
        prompt,
        original[len(prompt) :],
        repetition_penalty=1.0,
        temperature=0.0,
        healing=healing.processor,
    )
    scores = torch.randn(1, len(vocab))
    assert torch.equal(_step(cb, [rebuilt], scores), scores)
