"""The text part of a population query's prompted rows, assembled once and reused while the search asks.

A derivative-free search queries the same train batch with P new prompts every generation. The chunks of
examples, their token embeddings, masks and targets, and the rows that hold them around the prompt slots do
not change between generations; only the P prompts do. `RowsCache` keeps, per chunk of examples, those rows
with the text already in place, and each query only writes its prompts into their slots. The rows are the
values `Backbone._insert` would assemble (a copy, not arithmetic), so the logits are the same bit for bit.

Reuse is for frozen, gradient-free queries only: a prompt that needs gradients gets fresh rows every time
(an autograd graph must not see its input overwritten), and the cache is dropped when the batch, the prompt
shape or the embedding matrix (an in-place update bumps its version) changes. It holds one layout, at most
`max_bytes` of rows: a query larger than that assembles its rows per chunk as before.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass, field

import torch
from torch import Tensor


@dataclass
class ChunkRows:
    """One chunk of examples (rows `index` of the batch, length-sorted, `width` tokens of text) and, once built,
    its prompted rows for up to `capacity` prompts: embeds [capacity, b, width + L, d] with empty prompt slots."""

    index: Tensor
    width: int
    prompt_slices: list[slice]
    embeds: Tensor  # [b, width, d]: the text's token embeddings
    mask: Tensor  # [b, width]
    target: Tensor  # [b]
    rows: tuple[Tensor, Tensor, Tensor] | None = field(default=None, repr=False)

    @property
    def capacity(self) -> int:
        return max(s.stop - s.start for s in self.prompt_slices)

    def prompted(self, prompts: Tensor, offset: int, added: bool) -> tuple[Tensor, Tensor, Tensor]:
        """(embeds [n*b, T, d], mask [n*b, T], target [n*b]) for n prompts [n, L, d]: rows r = p * b + i hold
        example i with prompt p in its slot (inserted rows) or the example alone (`added`: the prompt is added
        later, by a hook)."""
        n, length = prompts.shape[0], prompts.shape[1]
        b = self.index.shape[0]
        if self.rows is None:
            self.rows = self._assemble(self.capacity, 0 if added else length, offset)
        embeds, mask, target = self.rows
        if not added:
            embeds[:n, :, offset : offset + length] = prompts[:, None]
        return embeds[:n].view(n * b, *embeds.shape[2:]), mask[: n * b], target[: n * b]

    def _assemble(self, capacity: int, length: int, offset: int) -> tuple[Tensor, Tensor, Tensor]:
        b, width, d = self.embeds.shape
        embeds = self.embeds.new_empty(capacity, b, width + length, d)
        embeds[:, :, :offset] = self.embeds[:, :offset]
        embeds[:, :, offset + length :] = self.embeds[:, offset:]
        ones = self.mask.new_ones(b, length)
        mask = torch.cat([self.mask[:, :offset], ones, self.mask[:, offset:]], dim=1).repeat(capacity, 1)
        shifted = torch.where(self.target >= offset, self.target + length, self.target)
        return embeds, mask, shifted.repeat(capacity)

    def nbytes(self, length: int) -> int:
        b, width, d = self.embeds.shape
        return self.capacity * b * (width + length) * d * self.embeds.element_size()


class RowsCache:
    """The last population query's chunks, kept while the next query has the same batch, prompt shape and
    embedding matrix."""

    def __init__(self, max_bytes: int):
        self.max_bytes = max_bytes
        self._key: tuple | None = None
        self._batch: weakref.ref | None = None
        self._chunks: list[ChunkRows] | None = None

    def get(self, batch, key: tuple) -> list[ChunkRows] | None:
        if self._chunks is not None and self._key == key and self._batch is not None and self._batch() is batch:
            return self._chunks
        return None

    def put(self, batch, key: tuple, chunks: list[ChunkRows], prompt_len: int) -> bool:
        """Keep `chunks` if their rows fit in `max_bytes`; whether they were kept."""
        self.clear()
        if sum(chunk.nbytes(prompt_len) for chunk in chunks) > self.max_bytes:
            return False
        self._key, self._batch, self._chunks = key, weakref.ref(batch), chunks
        return True

    def clear(self) -> None:
        self._key = self._batch = self._chunks = None
