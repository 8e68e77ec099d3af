"""The one interface every method talks to: label logits for a batch under a population of soft prompts.

A family adapter (masked_lm, causal_lm, seq2seq, sentence_encoder) only says how to read class scores
out of the model's hidden states; inserting the prompts, population batching and chunking live here.

Scoring takes values, the backbone keeps no task state: the label words are a `Verbalizer` the batch carries
(`Backbone.verbalizer(words)`, usually made by `encode_split`), a trainable head is an argument, and the
per-row extras a method's hooks read exist only inside the forward they belong to (`rows_scope`).
"""

from __future__ import annotations

import logging
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Iterator

import torch
from torch import Tensor

from prompt_bench.models.loading import ModelSpec, precision_name
from prompt_bench.models.prompted_rows import ChunkRows, RowsCache, slotted

log = logging.getLogger(__name__)

#: the `extras` key of a soft prompt added onto placeholder words ([P, L, d] per prompt, [rows, L, d] per row)
ADDED_PROMPT = "added_prompt"


def add_at_prompt(hidden: Tensor, prompt: Tensor, context: "RowContext") -> Tensor:
    """`hidden` [rows, T, d] with `prompt` [rows, L, d] added at the prompt positions, out of place (gradients, if
    any, and the caller's tensor stay intact)."""
    if prompt.shape[0] != hidden.shape[0] or prompt.shape[1] != context.prompt_len:
        raise ValueError(f"a prompt for {prompt.shape[0]} rows of {prompt.shape[1]} tokens, but the forward has "
                         f"{hidden.shape[0]} rows with a {context.prompt_len}-token prompt")
    start, stop = context.prompt_offset, context.prompt_offset + context.prompt_len
    prompt = prompt.to(device=hidden.device, dtype=hidden.dtype)
    return torch.cat([hidden[:, :start], hidden[:, start:stop] + prompt, hidden[:, stop:]], dim=1)


@dataclass
class RowContext:
    """What hooks inside the model may read during one forward: per-row tensors expanded from per-prompt
    `extras` (row r belongs to prompt r // n_examples), and where the soft prompt sits."""

    extras: dict[str, Tensor]
    prompt_offset: int
    prompt_len: int


#: (backbone, rows) of the scoring forward running now; read only through `current_rows`
_FORWARD: ContextVar[tuple[object, RowContext] | None] = ContextVar("prompt_bench_forward_rows", default=None)


@contextmanager
def rows_scope(backbone: object, context: RowContext) -> Iterator[RowContext]:
    """Within the block, `current_rows(backbone)` is `context`; afterwards it is what it was before.

    Why a ContextVar and not an attribute of the backbone: hooks (deep prompts, prefixes, thinned networks, the
    added prompt) are called by the model from deep inside a forward, where we cannot pass them arguments, so
    they must look the rows up. A value set with a token and reset by the `with` cannot outlive the forward (an
    exception included), restores the outer rows if a forward runs inside another, is per thread, and cannot be
    assigned from outside: a hook sees the rows of the forward it is called in, or none.
    """
    token = _FORWARD.set((backbone, context))
    try:
        yield context
    finally:
        _FORWARD.reset(token)


def current_rows(backbone: object) -> RowContext | None:
    """The rows of the forward `backbone` is scoring now (in this thread), None outside one."""
    current = _FORWARD.get()
    return current[1] if current is not None and current[0] is backbone else None


@dataclass(eq=False)
class Verbalizer:
    """A task's label words as one backbone reads them: class c scores as the logit of token `ids[c]` (LMs),
    or as the similarity to the label word's sentence embedding `embeddings[c]` (sentence encoders).

    A value made by `Backbone.verbalizer` and carried by the encoded split and its batches, never set on the
    backbone: one backbone scores several tasks (multitask's union, MetaPT's pseudo-labels beside the downstream
    task) and each batch is read with its own words, with nothing to set up, save or restore between them.
    """

    words: tuple[str, ...]
    ids: Tensor  # [C]: vocabulary rows (LMs); 0..C-1 (sentence encoders)
    embeddings: Tensor | None = None  # [C, d]: L2-normalised mean-pooled label words (sentence encoders)

    def __len__(self) -> int:
        return len(self.words)


@dataclass
class EncodedBatch:
    """Token ids of templated inputs, right-padded, with the position the label is read from."""

    input_ids: Tensor  # [B, T]
    attention_mask: Tensor  # [B, T]
    target_pos: Tensor  # [B]: mask position (masked LM) or last real token (causal LM)
    labels: Tensor  # [B]
    #: [B, C] classes each row may take (multitask: the union of the tasks' label words, own task's allowed)
    class_mask: Tensor | None = None
    #: [B] the task each row comes from (multitask), for prompts with task-specific parts
    task_ids: Tensor | None = None
    #: placeholder words every row holds at the backbone's prompt offset; a soft prompt is added onto them
    #: (BBT's additive prompt) instead of being inserted. 0: no placeholders
    prompt_slots: int = 0
    #: the label words the classes are read from (None: only a head can score the batch)
    verbalizer: Verbalizer | None = None

    def __len__(self) -> int:
        return self.input_ids.shape[0]

    def rows(self, index: Tensor) -> "EncodedBatch":
        """The sub-batch of the rows in `index`."""
        return EncodedBatch(**{name: value[index] if isinstance(value, Tensor) else value
                               for name, value in vars(self).items()})

    def mask_logits(self, logits: Tensor) -> Tensor:
        """Logits [..., B, C] with the classes a row may not take pushed far down (finite, so losses and
        KL terms stay finite); unchanged without a class mask."""
        if self.class_mask is None:
            return logits
        return logits.masked_fill(~self.class_mask.to(logits.device), -1e4)


class Backbone:
    """A frozen pre-trained model seen as a classifier over a task's label words."""

    family: str = ""
    #: where the soft prompt goes in the token sequence: after [CLS]/<s> for encoders, first for decoders
    prompt_offset: int = 0
    #: whether `_features` uses `prompt_mask` (so label_logits builds one only for families that read it)
    reads_prompt_positions: bool = False

    def __init__(self, spec: ModelSpec, model, tokenizer, device: torch.device, max_tokens_per_forward: int = 16384):
        self.spec = spec
        self.model = model
        self.tokenizer = tokenizer
        self.device = device
        self.max_tokens_per_forward = max_tokens_per_forward
        self._added_prompt_hook = None
        self._rows_cache = RowsCache()

    # -- what the model looks like -------------------------------------------------------------
    @property
    def hidden_size(self) -> int:
        return self.word_embeddings.weight.shape[1]

    @property
    def word_embeddings(self) -> torch.nn.Embedding:
        return self.model.get_input_embeddings()

    @property
    def dtype(self) -> torch.dtype:
        return self.word_embeddings.weight.dtype

    @property
    def precision(self) -> str:
        """The precision the model runs in, as results.json records it: bf16 or fp32."""
        return precision_name(self.dtype)

    @property
    def max_positions(self) -> int:
        config = self.model.config
        limit = getattr(config, "max_position_embeddings", None) or getattr(config, "n_positions", None) or 512
        if "roberta" in str(getattr(config, "model_type", "")):
            limit -= int(config.pad_token_id or 0) + 1  # RoBERTa's positions start after its padding index (514 -> 512)
        return int(limit)

    @property
    def mask_token(self) -> str | None:
        return self.tokenizer.mask_token


    def word_ids(self, word: str) -> list[int]:
        """Token ids of `word` as a verbalizer slot predicts it: after a space, or bare with
        model.label_word_prefix="" (the reference's `tokenizer.encode(word, add_special_tokens=False)`)."""
        return self.tokenizer(self.spec.label_word_prefix + word, add_special_tokens=False).input_ids

    # -- the label words ------------------------------------------------------------------------
    def verbalizer(self, words: tuple[str, ...]) -> Verbalizer:
        """`words` as this backbone reads them: each word's first token (a warning if it has more)."""
        ids = []
        for word in words:
            pieces = self.word_ids(word)
            if len(pieces) > 1:
                log.warning("label word %r is %d tokens for %s; scoring its first token", word, len(pieces), self.spec.name)
            ids.append(pieces[0])
        if len(set(ids)) < len(ids):
            from prompt_bench.errors import ConfigError

            raise ConfigError(f"label words {list(words)} share a first token on {self.spec.name}: choose distinct words")
        return Verbalizer(tuple(words), torch.tensor(ids, device=self.device))

    def encode_text(self, text: str) -> tuple[list[int], int]:
        """Token ids with special tokens, and the index the label is read from."""
        ids = self.tokenizer(text, add_special_tokens=True, truncation=False).input_ids
        return ids, self._target_index(ids)

    def _target_index(self, ids: list[int]) -> int:
        raise NotImplementedError

    # -- the hot path ----------------------------------------------------------------------------
    def label_logits(self, batch: EncodedBatch, prompts: Tensor | None = None,
                     extras: dict[str, Tensor] | None = None, head: torch.nn.Module | None = None,
                     shared_layers: int = 0) -> Tensor:
        """Class logits [P, B, C] for each of P prompts [P, L, d] (or [1, B, C] without a prompt), read with
        the batch's verbalizer, or by `head` over the family's features if one is given (P-tuning v2's heads).

        All P x B prompted sequences go through the model together, in chunks of at most
        `max_tokens_per_forward` tokens, so a whole DFO generation costs a few large forwards. Chunks
        hold examples of similar length, each trimmed to its own longest row: few-shot batches mix
        8- and 45-token sentences, and padding everything to the longest doubled the cost.
        Gradients flow to `prompts` when the caller has them enabled. `extras` are per-prompt tensors
        (leading dim P) that hooks installed by a method see per row through `current_rows(backbone)`.

        `shared_layers` k > 0: the caller guarantees that the first k transformer layers compute the same thing for
        every prompt (the same input prompt, and extras that those layers' hooks read equal to prompt 0's, e.g. a
        BBTv2 generation searching layer k). Then, per chunk of examples, the embeddings and layers 0..k-1 run once
        on prompt 0's rows and every prompt continues from their output (`_shared_prefix`): the same chunks, widths
        and per-row arithmetic, without computing the shared prefix P times.
        """
        if extras and prompts is None:
            raise ValueError("extras are per-prompt: pass prompts with them")
        if not 0 <= shared_layers <= len(self.transformer_layers()):
            raise ValueError(f"shared_layers must be in 0..{len(self.transformer_layers())}, got {shared_layers}")
        n_prompts = 1 if prompts is None else prompts.shape[0]
        prompt_len = 0 if prompts is None else prompts.shape[1]
        if prompts is not None:
            prompts = prompts.to(device=self.device, dtype=self.dtype)
        # Rows holding placeholder words (BBT's `cat_or_add=add`): each prompt is added onto their hidden states as
        # they enter the first transformer block (= the embedding layer's output) instead of being inserted.
        added = bool(batch.prompt_slots) and prompts is not None
        if added:
            if prompt_len != batch.prompt_slots:
                raise ValueError(f"a {prompt_len}-token prompt cannot be added onto {batch.prompt_slots} placeholder words")
            if self._added_prompt_hook is None:
                self._added_prompt_hook = self.transformer_layers()[0].register_forward_pre_hook(
                    self._add_prompt, with_kwargs=True)
            extras = {**(extras or {}), ADDED_PROMPT: prompts}
        slots = 0 if added else prompt_len
        # A frozen population query (a DFO generation) keeps its chunks' layout for the next one and assembles its
        # rows in one reused buffer (prompted_rows.py)
        reuse = prompts is not None and n_prompts > 1 and not torch.is_grad_enabled()
        weight = self.word_embeddings.weight
        key = (n_prompts, prompt_len, added, self.dtype, weight.data_ptr(), weight._version)
        chunks = self._rows_cache.get(batch, key) if reuse else None
        if chunks is None:
            chunks = self._example_chunks(batch, n_prompts, slots)
            if reuse:
                self._rows_cache.put(batch, key, chunks)
        groups = []
        for chunk in chunks:
            embeds, mask, target, index = chunk.embeds, chunk.mask, chunk.target, chunk.index

            def forward(part: slice, prefix=None) -> Tensor:
                n = part.stop - part.start
                if prompts is None:
                    rows = (embeds, mask, target)
                elif reuse:
                    rows = chunk.prompted(prompts[part], self.prompt_offset, added, self._rows_cache.scratch)
                elif added:
                    rows = (embeds.repeat(n, 1, 1), mask.repeat(n, 1), target.repeat(n))
                else:
                    rows = self._insert(embeds, mask, target, prompts[part])
                context = RowContext(
                    {k: v[part].repeat_interleave(len(index), dim=0) for k, v in (extras or {}).items()},
                    self.prompt_offset, prompt_len,
                )
                prompt_mask = None
                if prompt_len and self.reads_prompt_positions:
                    prompt_mask = torch.zeros(rows[1].shape, dtype=torch.bool, device=rows[1].device)
                    prompt_mask[:, self.prompt_offset : self.prompt_offset + prompt_len] = True
                if prefix == "compute":
                    return self._prefix_output(shared_layers, context, *rows, prompt_mask, batch.verbalizer, head)
                with self._prefix_replayed(shared_layers, prefix, n):
                    return self._scores_in_context(context, *rows, prompt_mask, batch.verbalizer, head).view(n, len(index), -1)

            prefix = forward(slice(0, 1), "compute") if shared_layers and n_prompts > 1 else None
            groups.append(torch.cat([forward(part, prefix) for part in chunk.prompt_slices], dim=0))
        order = torch.cat([chunk.index for chunk in chunks])
        return batch.mask_logits(torch.cat(groups, dim=1)[:, _inverse(order)])

    # -- a prefix shared by every prompt (`label_logits(shared_layers=k)`) ---------------------------------------
    def _prefix_output(self, k: int, context: RowContext, *rows) -> object:
        """What transformer layer k-1 returns for one prompt's rows: the forward runs up to it and stops."""
        captured = []

        def stop(module, args, output):
            captured.append(output)
            raise _PrefixDone

        handle = self.transformer_layers()[k - 1].register_forward_hook(stop)
        try:
            self._scores_in_context(context, *rows)
        except _PrefixDone:
            pass
        finally:
            handle.remove()
        if len(captured) != 1:
            raise RuntimeError(f"layer {k - 1} of {self.spec.name} did not run in the scoring forward")
        return captured[0]

    @contextmanager
    def _prefix_replayed(self, k: int, prefix: object, n: int) -> Iterator[None]:
        """Within the block, layers 0..k-1 do not compute: each returns `prefix` (layer k-1's output for one
        prompt's rows) repeated for n prompts, so layer k receives exactly what the full forward would give it.
        Their pre-hooks and the embeddings still run (cheap; their results are not used past layer k-1).
        A block returns its hidden states alone or first in a tuple; the other members (T5's relative position
        bias, [1, heads, T, T]) do not depend on the rows and are passed on as they are."""
        if prefix is None:
            yield
            return
        if isinstance(prefix, Tensor):
            output = prefix.repeat(n, *[1] * (prefix.dim() - 1))
        elif isinstance(prefix, tuple) and isinstance(prefix[0], Tensor):
            output = (prefix[0].repeat(n, *[1] * (prefix[0].dim() - 1)), *prefix[1:])
        else:
            raise NotImplementedError(f"a transformer block of {self.spec.name} returns {type(prefix).__name__}, "
                                      "not hidden states (alone or first in a tuple): no shared prefix for it")
        layers = list(self.transformer_layers())[:k]
        saved = [layer.__dict__.get("forward") for layer in layers]  # a forward someone else set on the instance
        for layer in layers:
            layer.forward = lambda *args, **kwargs: output
        try:
            yield
        finally:
            for layer, forward in zip(layers, saved):
                if forward is None:
                    del layer.forward
                else:
                    layer.forward = forward

    def _add_prompt(self, module, args, kwargs):
        context = current_rows(self)
        if context is None or ADDED_PROMPT not in context.extras:
            return None
        hidden = add_at_prompt(args[0] if args else kwargs["hidden_states"], context.extras[ADDED_PROMPT], context)
        return ((hidden, *args[1:]), kwargs) if args else (args, {**kwargs, "hidden_states": hidden})

    def transformer_layers(self) -> torch.nn.ModuleList:
        """The stack of transformer blocks the input goes through (the encoder's, for seq2seq)."""
        config = self.model.config
        depth = getattr(config, "num_hidden_layers", None) or getattr(config, "num_layers", None)
        root = self.model.get_encoder() if self.family == "seq2seq" else self.model
        for module in root.modules():
            if isinstance(module, torch.nn.ModuleList) and len(module) == depth:
                return module
        raise NotImplementedError(f"cannot find the transformer blocks of {type(self.model).__name__}")

    def keep_bottom_layers(self, depth: int) -> None:
        """Drop every transformer block above the first `depth`: a shallower, cheaper copy of the model
        (DistilBERT-style truncation), e.g. a student smaller than its teacher."""
        blocks = self.transformer_layers()
        if not 0 < depth <= len(blocks):
            raise ValueError(f"cannot keep {depth} of {self.spec.name}'s {len(blocks)} transformer blocks")
        del blocks[depth:]
        config = self.model.config
        for key in ("num_hidden_layers", "num_layers"):
            if getattr(config, key, None) is not None:
                setattr(config, key, depth)
        if isinstance(getattr(config, "layer_types", None), list):  # newer configs list one entry per block
            config.layer_types = config.layer_types[:depth]

    def _chunks(self, sorted_lengths: list[int], n_prompts: int, prompt_len: int):
        """Yield (example slice, prompt slices) so each forward stays under the token budget."""
        budget = self.max_tokens_per_forward
        start = 0
        while start < len(sorted_lengths):
            stop = start + 1
            while stop < len(sorted_lengths) and (stop + 1 - start) * n_prompts * (sorted_lengths[stop] + prompt_len) <= budget:
                stop += 1
            per_forward = max(1, budget // ((stop - start) * (sorted_lengths[stop - 1] + prompt_len)))
            prompt_slices = [slice(p, min(n_prompts, p + per_forward)) for p in range(0, n_prompts, per_forward)]
            yield slice(start, stop), prompt_slices
            start = stop

    def _example_chunks(self, batch: EncodedBatch, n_prompts: int, slots: int) -> list[ChunkRows]:
        """The batch's examples sorted by length and cut into `_chunks`, each with its text's embeddings, trimmed
        to its own longest row (`slots`: the prompt tokens each row gains)."""
        lengths = batch.attention_mask.sum(1)
        order = torch.argsort(lengths, stable=True)
        sorted_lengths = lengths[order].tolist()
        chunks = []
        for examples, prompt_slices in self._chunks(sorted_lengths, n_prompts, slots):
            index = order[examples]
            width = int(sorted_lengths[examples.stop - 1])
            chunks.append(ChunkRows(index, width, prompt_slices, self.word_embeddings(batch.input_ids[index, :width]),
                                    batch.attention_mask[index, :width], batch.target_pos[index]))
        return chunks

    def _insert(self, embeds: Tensor, mask: Tensor, target: Tensor, prompts: Tensor):
        n_prompts, prompt_len, _ = prompts.shape
        batch_size = embeds.shape[0]
        cut = self.prompt_offset
        expanded = embeds.unsqueeze(0).expand(n_prompts, -1, -1, -1)
        tiled_prompts = prompts.unsqueeze(1).expand(-1, batch_size, -1, -1)
        rows_embeds = torch.cat([expanded[:, :, :cut], tiled_prompts, expanded[:, :, cut:]], dim=2)
        rows_embeds = rows_embeds.reshape(n_prompts * batch_size, -1, embeds.shape[-1])
        rows_mask, shifted = slotted(mask, target, cut, prompt_len)
        return rows_embeds, rows_mask.repeat(n_prompts, 1), shifted.repeat(n_prompts)

    def row_logits(self, embeds: Tensor, mask: Tensor, target: Tensor, prompt_mask: Tensor | None = None,
                   extras: dict[str, Tensor] | None = None, verbalizer: Verbalizer | None = None,
                   head: torch.nn.Module | None = None) -> Tensor:
        """Class logits [N, C] for N rows a method assembled itself (input embeddings with prompts already
        in place, e.g. Dynamic Prompting's per-instance arrangement), read with `verbalizer` or by `head`;
        `extras` are per row.

        As in `label_logits`, rows go through the model in length-sorted chunks of at most
        `max_tokens_per_forward` tokens, each cut after its longest row's last attended token (or its target,
        if later): nothing past that point is attended or read. Padding every row to the batch's longest
        made a Dynamic Prompting step 1.4x a prompt tuning step on the same CB batch.
        """
        extras = extras or {}
        columns = torch.arange(1, mask.shape[1] + 1, device=mask.device)
        extent = torch.maximum((mask > 0).long().mul(columns).amax(1), target + 1)
        order = torch.argsort(extent, stable=True)
        sorted_extent = extent[order].tolist()
        parts = []
        for rows, _ in self._chunks(sorted_extent, 1, 0):
            index, width = order[rows], int(sorted_extent[rows.stop - 1])
            context = RowContext({k: v[index] for k, v in extras.items()}, 0, 0)
            parts.append(self._scores_in_context(context, embeds[index, :width].to(self.dtype), mask[index, :width],
                                                 target[index], None if prompt_mask is None else prompt_mask[index, :width],
                                                 verbalizer, head))
        return torch.cat(parts)[_inverse(order)]

    def _scores_in_context(self, context: RowContext, embeds: Tensor, mask: Tensor, target: Tensor,
                           prompt_mask: Tensor | None, verbalizer: Verbalizer | None,
                           head: torch.nn.Module | None) -> Tensor:
        """`_class_scores`, with `context` visible to the method's hooks for this forward only (`rows_scope`)."""
        if head is None and verbalizer is None:
            raise ValueError("nothing to read the classes with: encode the split with a verbalizer or pass a head")
        with rows_scope(self, context):
            return self._class_scores(embeds, mask, target, prompt_mask, verbalizer, head)

    def _class_scores(self, embeds: Tensor, mask: Tensor, target: Tensor, prompt_mask: Tensor | None,
                      verbalizer: Verbalizer | None, head: torch.nn.Module | None) -> Tensor:
        """[N, C] class logits for N prompted sequences; `prompt_mask` [N, T] marks soft-prompt positions."""
        if getattr(head, "reads", None) == "first_token":  # P-tuning v2's reference head: the [CLS] state
            features = self.encoder_stack()(inputs_embeds=embeds, attention_mask=mask).last_hidden_state[:, 0]
        else:
            features = self._features(embeds, mask, target, prompt_mask)
        if head is not None:
            return head(features.to(next(head.parameters()).dtype))
        return self._verbalize(features, verbalizer)

    def _features(self, embeds: Tensor, mask: Tensor, target: Tensor, prompt_mask: Tensor | None) -> Tensor:
        """[N, d]: the hidden state the family reads its label from."""
        raise NotImplementedError

    def _verbalize(self, features: Tensor, verbalizer: Verbalizer) -> Tensor:
        """[N, C]: the label words' scores given `_features`."""
        raise NotImplementedError

    def encoder_stack(self) -> torch.nn.Module:
        """The module whose last hidden state represents the input (the encoder, for seq2seq)."""
        return self.model.get_encoder() if self.family == "seq2seq" else self.model.base_model

    @torch.no_grad()
    def pooled(self, batch: EncodedBatch) -> Tensor:
        """[B, d]: the frozen model's mean last hidden state over each input's real tokens, no prompt."""
        states = self.encoder_stack()(input_ids=batch.input_ids, attention_mask=batch.attention_mask).last_hidden_state
        weights = batch.attention_mask.unsqueeze(-1).to(states.dtype)
        return ((states * weights).sum(1) / weights.sum(1).clamp(min=1)).float()

    def probe_forward(self) -> None:
        """One tiny forward through the whole scoring path (used to discover what the model calls)."""
        ids = torch.tensor([[self.tokenizer.cls_token_id or self.tokenizer.bos_token_id or 0, 1, 2]], device=self.device)
        self._features(self.word_embeddings(ids), torch.ones_like(ids), torch.tensor([1], device=self.device), None)

    def _gather(self, hidden: Tensor, target: Tensor) -> Tensor:
        return hidden[torch.arange(hidden.shape[0], device=hidden.device), target]


class _PrefixDone(Exception):
    """Ends a forward once the shared prefix's last layer has run (`Backbone._prefix_output`)."""


def _inverse(order: Tensor) -> Tensor:
    """The permutation that puts rows processed in `order` back in their original places."""
    inverse = torch.empty_like(order)
    inverse[order] = torch.arange(len(order), device=order.device)
    return inverse
