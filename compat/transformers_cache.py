"""A fill's key/value cache with room to grow (transformers' DynamicCache layers, changed).

DynamicCache concatenates every step's keys and values onto the whole cache: for a fill's 8
candidate rows over a 512-token prefix that copies about 190 MB per decode step. A layer
switched to RoomyLayer writes each step into spare room of one buffer and hands attention a
view of the filled part, so a step copies only its own tokens; the values, and so the fills,
are the same. Editor-sized fills: median 2.64 -> 2.48 s (bench/RESULTS.md, issue 24 part 3).
Written against DynamicLayer's attributes (keys, values, is_initialized) in 5.24.
"""

from __future__ import annotations

import torch
import transformers
from transformers.cache_utils import DynamicLayer

from compat import require

WRITTEN_FOR = "5.24.0"
ROOM = 128  # tokens of spare room: a fill's longest row (64) or scored row (96 + healing)


class RoomyLayer(DynamicLayer):
    """`keys`/`values` are views of the first `_filled` positions of buffers with spare room,
    made when the cache is first repeated per row (before that it is DynamicLayer)."""

    _k: torch.Tensor | None = None
    _v: torch.Tensor | None = None
    _filled = 0

    def _into(self, keys: torch.Tensor, values: torch.Tensor, room: int, repeats: int = 1) -> None:
        """New buffers with `room` to spare, each row of keys/values `repeats` times over, copied
        straight in (repeat_interleave first made a copy of them all, then copied that)."""
        b, h, n, d = keys.shape
        self._k = keys.new_empty((b * repeats, h, n + room, d))
        self._v = values.new_empty((b * repeats, h, n + room, d))
        for buffer, source in ((self._k, keys), (self._v, values)):
            rows = buffer[:, :, :n].unflatten(0, (b, repeats))
            rows.copy_(source[:, None].expand(b, repeats, h, n, d))
        self._filled = n
        self._views()

    def _views(self) -> None:
        self.keys, self.values = self._k[:, :, : self._filled], self._v[:, :, : self._filled]

    def update(self, key_states, value_states, *args, **kwargs):
        if self._k is None or self._k.shape[0] != key_states.shape[0]:
            return super().update(key_states, value_states, *args, **kwargs)
        n, m = self._filled, key_states.shape[-2]
        if n + m > self._k.shape[2]:
            self._into(self.keys, self.values, max(ROOM, m))
        self._k[:, :, n : n + m] = key_states
        self._v[:, :, n : n + m] = value_states
        self._filled = n + m
        self._views()
        return self.keys, self.values

    def batch_repeat_interleave(self, repeats: int) -> None:
        if self.get_seq_length() > 0:
            self._into(self.keys, self.values, ROOM, repeats)

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        if self._k is None:
            return super().batch_select_indices(indices)
        keep = indices.tolist()
        if keep != sorted(set(keep)):
            self._k, self._v = self._k[indices], self._v[indices]
        else:
            # Rows kept in order (a fill dropping its ended candidates): each moves down in
            # place, only its filled part, where indexing copied every row's whole buffer.
            n = self._filled
            for i, row in enumerate(keep):
                if row != i:
                    self._k[i, :, :n] = self._k[row, :, :n]
                    self._v[i, :, :n] = self._v[row, :, :n]
            self._k, self._v = self._k[: len(keep)], self._v[: len(keep)]
        self._views()

    def fork(self, tails: list[tuple[torch.Tensor, torch.Tensor] | None], counts: list[int]):
        """This (one-row) layer as len(counts) rows, row r followed by counts[r] positions of
        tails[r] (keys, values [heads, >= counts[r], dim]; None for 0): the tokens a fill's
        candidate already computed while it was sampled. Rows are left-padded with zeros to the
        longest; the caller masks the padding."""
        keys, values = self.keys, self.values
        _, h, p, d = keys.shape
        width = max(counts)
        self._k = keys.new_empty((len(counts), h, p + width + ROOM, d))
        self._v = values.new_empty((len(counts), h, p + width + ROOM, d))
        for r, (tail, count) in enumerate(zip(tails, counts, strict=True)):
            pad = width - count
            for buffer, prefix, i in ((self._k, keys, 0), (self._v, values, 1)):
                buffer[r, :, :pad] = 0  # masked, but SDPA multiplies its values by 0
                buffer[r, :, pad : pad + p] = prefix[0]
                if count:
                    buffer[r, :, pad + p : p + width] = tail[i][:, :count]
        self._filled = p + width
        self._views()

    def crop(self, tokens_to_remove: int) -> None:
        super().crop(tokens_to_remove)
        self._k = self._v = None  # plain tensors again, until the next repeat

    def reset(self) -> None:
        self._k = self._v = None
        super().reset()


def row_tail(cache, row: int, start: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Row `row`'s keys and values from position `start` on, per layer (copies: the row's own
    buffer is reused once it is dropped)."""
    return [(layer.keys[row, :, start:].clone(), layer.values[row, :, start:].clone())
            for layer in cache.layers]  # fmt: skip


def fork_rows(cache, tails: list[list | None], counts: list[int]) -> None:
    """RoomyLayer.fork on every layer of a one-row cache: tails[r] is row r's row_tail() (or
    None where counts[r] is 0)."""
    for i, layer in enumerate(cache.layers):
        layer.fork([None if tail is None else tail[i] for tail in tails], counts)


def all_roomy(cache) -> bool:
    """Whether every layer is a RoomyLayer already repeated per row (has its buffers)."""
    return all(type(layer) is RoomyLayer and layer._k is not None for layer in cache.layers)


def give_room(cache) -> None:
    """Switch a DynamicCache's full-attention layers to RoomyLayer (in place)."""
    require("transformers", transformers.__version__, WRITTEN_FOR, __name__)
    for layer in cache.layers:
        if type(layer) is DynamicLayer:
            layer.__class__ = RoomyLayer
