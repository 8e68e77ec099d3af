"""Deep prompts: a prompt for every transformer layer, added to the hidden states at the soft-prompt
positions as they enter that layer (BBTv2's "deep prompt", as txsun1997/Black-Box-Tuning's
models/deep_modeling_*.py apply it: `hidden_states + [0, prompt_l, 0]` before layer l runs).

Generic over families: forward pre-hooks on `backbone.transformer_layers()` (the encoder's blocks for
seq2seq) read per-row layer prompts from `current_rows(backbone).extras[DEEP_PROMPT]` ([rows, n_layers,
L, d], expanded from the per-prompt `extras` of `label_logits`), so a whole population with its own
deep prompts is scored in the same batched forwards as shallow prompts. A block may get its hidden
states positionally or as the `hidden_states` keyword (transformers 5 passes them positionally for
BERT, GPT-2, T5 and Llama today); both are handled. Rows without the key, and forwards outside
`label_logits`, are left untouched.
"""

from __future__ import annotations

import weakref
from contextlib import contextmanager
from typing import Callable, Iterator

from torch import Tensor

from prompt_bench.models.backbone import Backbone, add_at_prompt, current_rows

#: the `extras` key deep prompts travel under: [P, n_layers, L, d] per prompt, [rows, n_layers, L, d] per row
DEEP_PROMPT = "deep_prompt"

_active: "weakref.WeakSet[Backbone]" = weakref.WeakSet()


def _adder(backbone: Backbone, layer: int) -> Callable:
    def hook(module, args, kwargs):
        context = current_rows(backbone)
        if context is None or DEEP_PROMPT not in context.extras:
            return None
        positional = len(args) > 0
        hidden: Tensor = args[0] if positional else kwargs["hidden_states"]
        hidden = add_at_prompt(hidden, context.extras[DEEP_PROMPT][:, layer], context)
        if positional:
            return (hidden, *args[1:]), kwargs
        return args, {**kwargs, "hidden_states": hidden}

    return hook


@contextmanager
def deep_prompt_hooks(backbone: Backbone) -> Iterator[None]:
    """Within the block, forwards of `backbone` add `extras[DEEP_PROMPT]` to every layer's input.

    Re-entrant: a nested use on the same backbone installs nothing more (the prompt is added once).
    """
    if backbone in _active:
        yield
        return
    handles = [layer.register_forward_pre_hook(_adder(backbone, i), with_kwargs=True)
               for i, layer in enumerate(backbone.transformer_layers())]
    _active.add(backbone)
    try:
        yield
    finally:
        _active.discard(backbone)
        for handle in handles:
            handle.remove()


@contextmanager
def layer_inputs(backbone: Backbone) -> Iterator[list[list[Tensor]]]:
    """Record the hidden states entering each transformer layer during the block: [layer][forward] -> [N, T, d]."""
    recorded: list[list[Tensor]] = [[] for _ in backbone.transformer_layers()]

    def recorder(layer: int):
        def hook(module, args, kwargs):
            recorded[layer].append((args[0] if args else kwargs["hidden_states"]).detach())

        return hook

    handles = [layer.register_forward_pre_hook(recorder(i), with_kwargs=True)
               for i, layer in enumerate(backbone.transformer_layers())]
    try:
        yield recorded
    finally:
        for handle in handles:
            handle.remove()


def clipped_std(values: Tensor, rounds: int = 5, width: float = 3.0) -> float:
    """Std of `values` after `rounds` rounds of clipping to mean +- width * std (deepbbt.py's outlier
    clipping of hidden states before it sizes a layer's random projection)."""
    values = values.double().flatten()
    for _ in range(rounds):
        mean, std = values.mean(), values.std(unbiased=False)
        values = values.clamp(float(mean - width * std), float(mean + width * std))
    return float(values.std(unbiased=False))
