"""Which tokens a fill's scoring takes from its sampled rows' caches (model/infill/fim_rerank.py):
the rule alone, on hand-made rows. tests/integration/test_fim_bench.py runs it on a real model,
and tests/unit/test_fused.py layer.c's attention over the left-padded rows it makes."""

import torch

from model.infill.fim_rerank import Sampled, _reuse


def cached(tokens: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """One layer's keys and values for `tokens` positions (1 head of width 2)."""
    return [(torch.zeros(1, tokens, 2), torch.zeros(1, tokens, 2))]


def sampled(**tails: int) -> Sampled:
    # row 0 drew 1..6 and cached 5 of them; row 1 drew 1, 2, 9, 9 and cached 3
    return Sampled(
        texts=["a", "b"],
        greedy_row=0,
        steps=6,
        ids=[[1, 2, 3, 4, 5, 6], [1, 2, 9, 9]],
        logprobs=[[-0.1] * 6, [-0.2] * 4],
        tails={int(row[3:]): cached(n) for row, n in tails.items()},
    )


def test_each_scored_row_takes_its_own_sampled_rows_tokens():
    rows = [[1, 2, 3, 4, 5, 6, 7, 8], [1, 2, 9, 9, 7]]
    # row 0 shares 6 tokens with sampled row 0 (5 cached: 5 usable); row 1 shares 4 with
    # sampled row 1, one short of it is 3, and 3 are cached.
    assert _reuse(rows, sampled(row0=5, row1=3)) == ([5, 3], [0, 1])


def test_the_last_shared_token_is_scored_again_to_read_the_next_ones_probability():
    # Both rows share all 4 of sampled row 1's tokens; its cache holds all 4, but the 4th
    # is fed again: its logits give the 5th token's probability.
    assert _reuse([[1, 2, 9, 9, 7], [1, 2, 9, 9, 8]], sampled(row1=4)) == ([3, 3], [1, 1])


def test_a_row_that_shares_nothing_or_one_token_is_scored_from_the_prefix():
    # [1, 2, 3, 4] shares 4 with sampled row 0: 3; [7, 8] shares nothing; [1, 5] only its
    # first token, whose log p is the prefix's own.
    got = _reuse([[1, 2, 3, 4], [7, 8], [1, 5]], sampled(row0=5, row1=3))
    assert got == ([3, 0, 0], [0, -1, -1])
    assert _reuse([[1, 2, 3, 4]], sampled()) == ([0], [-1])  # nothing kept (the chat proposal)
