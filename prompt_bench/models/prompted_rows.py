"""The prompted rows of a population query, laid out once and assembled in one reused buffer.

A derivative-free search queries the same train batch with P new prompts every generation. The chunks of
examples, their token embeddings, the rows' masks and targets do not change between generations; only the P
prompts do. `RowsCache` keeps that layout (the text once per example, not once per prompt), and each forward's
rows are written into one scratch buffer that every chunk and every query reuses: the text around the prompt
slots, then the prompts. Nothing is allocated per forward, and the rows hold the values `Backbone._insert`
concatenates (copies, no arithmetic), so the logits are the same bit for bit.

Reuse is for frozen, gradient-free queries only: a prompt that needs gradients gets rows of its own (an
autograd graph must not see its input overwritten), and the layout is dropped when the batch, the prompt shape
or the embedding matrix (an in-place update bumps its version) changes. The scratch buffer is as large as the
largest forward (`compute.max_tokens_per_forward` tokens), so memory stays as it was without the cache.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass, field

import torch
from torch import Tensor


def slotted(mask: Tensor, target: Tensor, offset: int, slots: int) -> tuple[Tensor, Tensor]:
    """The mask [b, T + slots] and target [b] of b examples once `slots` prompt tokens sit at `offset`."""
    ones = mask.new_ones(mask.shape[0], slots)
    return (torch.cat([mask[:, :offset], ones, mask[:, offset:]], dim=1),
            torch.where(target >= offset, target + slots, target))


@dataclass
class ChunkRows:
    """One chunk of examples (rows `index` of the batch, length-sorted, `width` tokens of text) and, once laid
    out, its rows' mask [capacity * b, T] and target [capacity * b] for up to `capacity` prompts."""

    index: Tensor
    width: int
    prompt_slices: list[slice]
    embeds: Tensor  # [b, width, d]: the text's token embeddings
    mask: Tensor  # [b, width]
    target: Tensor  # [b]
    layout: tuple[Tensor, Tensor] | None = field(default=None, repr=False)

    @property
    def capacity(self) -> int:
        return max(s.stop - s.start for s in self.prompt_slices)

    def prompted(self, prompts: Tensor, offset: int, added: bool, scratch: "Scratch") -> tuple[Tensor, Tensor, Tensor]:
        """(embeds [n*b, T, d], mask [n*b, T], target [n*b]) for n prompts [n, L, d]: rows r = p * b + i hold
        example i with prompt p in its slot (inserted rows) or the example alone (`added`: the prompt is added
        later, by a hook). The embeds live in `scratch` until the next call writes over them."""
        n = prompts.shape[0]
        slots = 0 if added else prompts.shape[1]
        b, width, d = self.embeds.shape
        if self.layout is None:
            mask, target = slotted(self.mask, self.target, offset, slots)
            self.layout = (mask.repeat(self.capacity, 1), target.repeat(self.capacity))
        rows = scratch.take((n, b, width + slots, d), self.embeds)
        rows[:, :, :offset] = self.embeds[:, :offset]
        rows[:, :, offset + slots :] = self.embeds[:, offset:]
        if slots:
            rows[:, :, offset : offset + slots] = prompts[:, None]
        mask, target = self.layout
        return rows.view(n * b, width + slots, d), mask[: n * b], target[: n * b]


class Scratch:
    """One flat buffer, grown to the largest request and handed out as views: the rows of one forward at a time."""

    def __init__(self) -> None:
        self._buffer: Tensor | None = None

    def take(self, shape: tuple[int, ...], like: Tensor) -> Tensor:
        size = 1
        for extent in shape:
            size *= extent
        buffer = self._buffer
        if buffer is None or buffer.numel() < size or buffer.dtype != like.dtype or buffer.device != like.device:
            buffer = self._buffer = like.new_empty(size)
        return buffer[:size].view(shape)


class RowsCache:
    """The last population query's chunks, kept while the next query has the same batch, prompt shape and
    embedding matrix, and the scratch buffer their rows are assembled in."""

    def __init__(self) -> None:
        self.scratch = Scratch()
        self._key: tuple | None = None
        self._batch: weakref.ref | None = None
        self._chunks: list[ChunkRows] | None = None

    def get(self, batch, key: tuple) -> list[ChunkRows] | None:
        if self._chunks is not None and self._key == key and self._batch is not None and self._batch() is batch:
            return self._chunks
        return None

    def put(self, batch, key: tuple, chunks: list[ChunkRows]) -> None:
        self._key, self._batch, self._chunks = key, weakref.ref(batch), chunks

    def clear(self) -> None:
        self._key = self._batch = self._chunks = None
        self.scratch = Scratch()
