"""Fit a recycler on the shared word list and map a source prompt to the target model.

Inputs are tokenizers, embedding matrices and the source prompt: no task, no data split, no model forward.
"""

from __future__ import annotations

import logging
from typing import Any

from torch import Tensor

from prompt_bench.errors import ConfigError
from prompt_bench.recycling.recyclers import Recycler, make_recycler, map_error
from prompt_bench.recycling.vocab import WordList, word_list

log = logging.getLogger(__name__)


def shared_word_list(source_tokenizer, target_tokenizer, n_words: int = 4000, word_skip: int = 1000,
                     n_heldout: int = 500) -> WordList:
    words = word_list(source_tokenizer, target_tokenizer, n_words, word_skip, n_heldout)
    if len(words.fit) == 0:
        raise ConfigError(
            f"the source and target vocabularies share {words.n_shared} whole words, none left after skipping "
            f"method.word_skip={word_skip}: lower method.word_skip"
        )
    if len(words.fit) < n_words:
        log.warning("the vocabularies share %d whole words: fitting on %d (after skipping %d), not method.n_words=%d",
                    words.n_shared, len(words.fit), word_skip, n_words)
    return words


def fit_map(words: WordList, source_embeddings: Tensor, target_embeddings: Tensor, recycler: str = "v2v_lin",
            seed: int = 0, nn: dict[str, Any] | None = None) -> tuple[Recycler, dict[str, Any]]:
    """A recycler fitted on the embeddings of `words.fit`, and facts about it: the word counts, its error on
    the fitted words and on the held-out words (the next ones in frequency order, never fitted on)."""
    fit_source = source_embeddings[words.fit.source_ids].float()
    fit_target = target_embeddings[words.fit.target_ids].float()
    fitted = make_recycler(recycler, seed=seed, nn=nn).fit(fit_source, fit_target)
    info: dict[str, Any] = {
        "recycler": recycler,
        "n_shared_words": words.n_shared,
        "n_fit_words": len(words.fit),
        "n_heldout_words": len(words.heldout),
        "first_fit_words": words.fit.words[:10],
        "fit_error": map_error(fitted, fit_source, fit_target),
        "heldout_error": None,
    }
    if len(words.heldout):
        info["heldout_error"] = map_error(fitted, source_embeddings[words.heldout.source_ids].float(),
                                          target_embeddings[words.heldout.target_ids].float())
    return fitted, info


def recycle(prompt: Tensor, source_tokenizer, source_embeddings: Tensor, target_tokenizer, target_embeddings: Tensor,
            recycler: str = "v2v_lin", n_words: int = 4000, word_skip: int = 1000, n_heldout: int = 500,
            seed: int = 0, nn: dict[str, Any] | None = None) -> tuple[Tensor, dict[str, Any]]:
    """The source prompt [L, d_source] mapped to the target's embedding space [L, d_target], and the map's facts."""
    if prompt.shape[-1] != source_embeddings.shape[1]:
        raise ConfigError(f"the source prompt is {prompt.shape[-1]}-d but the source model's embeddings are "
                          f"{source_embeddings.shape[1]}-d: the prompt was not trained on that model")
    words = shared_word_list(source_tokenizer, target_tokenizer, n_words, word_skip, n_heldout)
    fitted, info = fit_map(words, source_embeddings.detach().cpu(), target_embeddings.detach().cpu(), recycler, seed, nn)
    return fitted(prompt.detach().float().cpu()), info
