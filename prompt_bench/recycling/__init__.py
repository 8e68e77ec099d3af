"""Prompt Recycling (Lester et al., 2022): move a soft prompt from a source model to a target model, with no task
data and no training on the target, through a map between the two input-embedding spaces learned on words
both vocabularies share (`vocab`), by one of three recyclers (`recyclers`)."""

from prompt_bench.recycling.recycle import fit_map, recycle, shared_word_list
from prompt_bench.recycling.recyclers import RECYCLERS, make_recycler, map_error
from prompt_bench.recycling.source import load_embeddings, read_source, source_model_spec
from prompt_bench.recycling.vocab import shared_words, whole_words, word_list

__all__ = ["RECYCLERS", "fit_map", "load_embeddings", "make_recycler", "map_error", "read_source", "recycle",
           "shared_word_list", "shared_words", "source_model_spec", "whole_words", "word_list"]
