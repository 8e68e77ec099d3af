"""A population query keeps its text rows for the next one (models/prompted_rows.py, issue 22 item 2): every
generation scores bit for bit as freshly assembled rows would, in every family and both prompt modes, and the
rows are rebuilt whenever what they were built from changes."""

from __future__ import annotations

import pytest
import torch

from prompt_bench.models.backbone import Backbone

from test_bbtv2_prefix_cache import MODELS, _api, deep_models  # noqa: F401 (deep_models is a fixture)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture
def chunk_builds(monkeypatch) -> list[int]:
    """How many times a query built its chunks of examples (their embeddings and rows) from the batch."""
    builds: list[int] = []
    original = Backbone._example_chunks

    def counted(self, *args, **kwargs):
        builds.append(1)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(Backbone, "_example_chunks", counted)
    return builds


def _fresh(backbone, query):
    """What `query` gives with rows of its own, concatenated for it (`Backbone._insert`: the path a query that
    may need gradients takes), nothing laid out before or after."""
    backbone._rows_cache.clear()
    with torch.enable_grad():
        return query()


@pytest.mark.parametrize("mode", ["add", "insert"])
@pytest.mark.parametrize("name", list(MODELS))
def test_every_generation_of_a_search_scores_bit_for_bit_as_fresh_rows_while_its_rows_are_built_once(
        deep_models, name, mode, chunk_builds):
    for max_tokens in (16384, 48):  # one forward per population, and many chunks of examples and of prompts
        api = _api(name, deep_models[name], mode, max_tokens)
        backbone = api._backbone
        torch.manual_seed(2)
        generations = [torch.randn(5, 3, api.hidden_size) * 0.1 for _ in range(3)]
        chunk_builds.clear()
        reused = [api.query(prompts) for prompts in generations]
        assert len(chunk_builds) == 1, (name, mode, max_tokens)
        for prompts, logits in zip(generations, reused):
            fresh = _fresh(backbone, lambda: backbone.label_logits(api._train, prompts))
            assert torch.equal(logits, fresh), (name, mode, max_tokens)


@torch.no_grad()
def test_another_batch_or_population_size_rebuilds_the_rows_and_scores_as_fresh(deep_models, chunk_builds):
    api = _api("masked_lm", deep_models["masked_lm"], "insert", 48)
    backbone, train = api._backbone, api._train
    dev = train.rows(torch.arange(3))
    torch.manual_seed(3)
    queries = [(batch, torch.randn(population, 3, api.hidden_size) * 0.1)
               for batch, population in ((train, 4), (dev, 4), (train, 4), (train, 6), (train, 6))]
    scored = [backbone.label_logits(batch, prompts) for batch, prompts in queries]
    assert len(chunk_builds) == 4  # only the last query found the rows it needed
    for (batch, prompts), logits in zip(queries, scored):
        assert torch.equal(logits, _fresh(backbone, lambda: backbone.label_logits(batch, prompts)))


@torch.no_grad()
def test_an_update_to_the_embedding_matrix_is_seen_by_the_next_query(deep_models):
    api = _api("masked_lm", deep_models["masked_lm"], "insert", 48)
    backbone, batch = api._backbone, api._train
    prompts = torch.randn(4, 3, api.hidden_size) * 0.1
    before = backbone.label_logits(batch, prompts)
    backbone.word_embeddings.weight.mul_(1.5)  # in place, as an optimizer step would
    after = backbone.label_logits(batch, prompts)
    assert not torch.equal(after, before)
    assert torch.equal(after, _fresh(backbone, lambda: backbone.label_logits(batch, prompts)))


def test_a_query_that_needs_gradients_gets_fresh_rows_and_its_exact_gradient(deep_models, chunk_builds):
    api = _api("causal_lm", deep_models["llama"], "insert", 48)
    backbone, batch = api._backbone, api._train
    torch.manual_seed(4)
    prompts = (torch.randn(3, 3, api.hidden_size) * 0.1).requires_grad_()
    grads = []
    for _ in range(2):
        prompts.grad = None
        backbone.label_logits(batch, prompts).square().sum().backward()
        grads.append(prompts.grad.clone())
    assert len(chunk_builds) == 2 and backbone._rows_cache.get(batch, None) is None
    # rows built anew by concatenation (Backbone._insert) each time: a kept buffer would be overwritten under the graph
    assert torch.equal(grads[0], grads[1]) and grads[0].abs().sum() > 0


@torch.no_grad()
def test_every_forward_assembles_its_rows_in_one_buffer_no_larger_than_the_largest_forward(deep_models):
    api = _api("seq2seq", deep_models["seq2seq"], "insert", 48)
    backbone, batch = api._backbone, api._train
    torch.manual_seed(5)
    for _ in range(2):
        backbone.label_logits(batch, torch.randn(6, 3, api.hidden_size) * 0.1)
    chunks = backbone._rows_cache.get(batch, next(iter([backbone._rows_cache._key])))
    largest = max(len(c.index) * (c.prompt_slices[0].stop - c.prompt_slices[0].start) * (c.width + 3) for c in chunks)
    assert len(chunks) > 1 and backbone._rows_cache.scratch._buffer.numel() == largest * api.hidden_size
