"""The shared word list a recycler is fitted on: English words that are one whole token in both vocabularies.

Lester et al. (2022) fit their recyclers on the embeddings of 4,000 words of the (shared) T5 SentencePiece
vocabulary, in vocabulary order (which follows frequency), filtered to English, after skipping the first
1,000. Their source and target models share one vocabulary; ours need not, so words are matched as strings:

* a tokenizer *writes a word whole* when encoding the word as it appears after a space gives exactly one
  token, and that token decodes back to the word itself (same case). This covers each tokenizer's own way
  of marking a word start (SentencePiece "▁word", GPT-2/Llama byte-level BPE "Ġword", WordPiece plain
  "word"); continuation pieces ("##ing", BPE's "ation") are never word starts, and an uncased WordPiece
  vocabulary has no "The" (it would write "the");
* candidates are ASCII alphabetic tokens only (the reference's "English only" filter);
* frequency order: each tokenizer's own id order (BPE ids follow merge order, SentencePiece ids follow
  piece scores, BERT's WordPiece body follows frequency), and a shared word's rank is the mean of its
  positions in the two tokenizers' ordered word lists. No text corpus, and so no task data, is read.

Everything here is a function of two tokenizers and nothing else.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass

#: a word that every tokenizer of interest writes as one token after a space, to find how it writes words
_PROBE = "the"


def _word_form(tokenizer) -> str:
    """" {}" if the tokenizer writes a word after a space as one token, else "{}" (SentencePiece tokenizers
    that add the word-start marker themselves and turn a leading space into a separate piece)."""
    spaced = tokenizer(" " + _PROBE, add_special_tokens=False).input_ids
    return " {}" if len(spaced) == 1 else "{}"


#: tokenizer -> (its size, its whole words): a script that recycles many prompts decodes each vocabulary once
_CACHE: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def whole_words(tokenizer) -> dict[str, int]:
    """{word: token id} of the ASCII alphabetic words this tokenizer writes as one whole-word token,
    in token-id order (the frequency order of BPE / SentencePiece / BERT WordPiece vocabularies)."""
    size = len(tokenizer)
    try:
        cached = _CACHE.get(tokenizer)
    except TypeError:  # not weak-referenceable: no cache
        cached = None
    if cached is not None and cached[0] == size:
        return dict(cached[1])
    found = _whole_words(tokenizer, size)
    try:
        _CACHE[tokenizer] = (size, dict(found))
    except TypeError:
        pass
    return found


def _whole_words(tokenizer, size: int) -> dict[str, int]:
    decoded = tokenizer.batch_decode([[i] for i in range(size)], skip_special_tokens=True,
                                     clean_up_tokenization_spaces=False)
    candidates: dict[str, int] = {}
    for token_id, text in enumerate(decoded):
        word = text.strip()
        if word and word.isascii() and word.isalpha() and word not in candidates:
            candidates[word] = token_id
    words = list(candidates)
    if not words:
        return {}
    form = _word_form(tokenizer)
    encoded = tokenizer([form.format(w) for w in words], add_special_tokens=False).input_ids
    found = {}
    for word, ids in zip(words, encoded):
        if len(ids) == 1 and tokenizer.decode(ids, clean_up_tokenization_spaces=False).strip() == word:
            found.setdefault(word, ids[0])
    return dict(sorted(found.items(), key=lambda item: item[1]))


@dataclass(frozen=True)
class SharedWords:
    """Words written whole by both tokenizers, most frequent first, with their ids on each side."""

    words: list[str]
    source_ids: list[int]
    target_ids: list[int]

    def __len__(self) -> int:
        return len(self.words)

    def slice(self, start: int, stop: int) -> "SharedWords":
        return SharedWords(self.words[start:stop], self.source_ids[start:stop], self.target_ids[start:stop])


def shared_words(source_tokenizer, target_tokenizer) -> SharedWords:
    """All words both tokenizers write whole, ordered by their mean frequency rank (ties: by word)."""
    source, target = whole_words(source_tokenizer), whole_words(target_tokenizer)
    source_rank = {w: r for r, w in enumerate(source)}
    target_rank = {w: r for r, w in enumerate(target)}
    common = sorted(set(source) & set(target), key=lambda w: (source_rank[w] + target_rank[w], w))
    return SharedWords(common, [source[w] for w in common], [target[w] for w in common])


@dataclass(frozen=True)
class WordList:
    """The words a recycler is fitted on, and the next words in frequency order, held out to measure it."""

    fit: SharedWords
    heldout: SharedWords
    n_shared: int  # all words shared by the two tokenizers


def word_list(source_tokenizer, target_tokenizer, n_words: int, skip: int, n_heldout: int) -> WordList:
    """Skip the `skip` most frequent shared words, fit on the next `n_words` (fewer if the vocabularies
    share fewer), hold out the `n_heldout` after those (the reference: 4,000 after skipping 1,000)."""
    shared = shared_words(source_tokenizer, target_tokenizer)
    fit = shared.slice(skip, skip + n_words)
    heldout = shared.slice(skip + n_words, skip + n_words + n_heldout)
    return WordList(fit=fit, heldout=heldout, n_shared=len(shared))
