"""The black-box view, BBT's projection and the ask/tell search: what a black-box method may rely on."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from prompt_bench.batching import encode_split
from prompt_bench.errors import BudgetExhausted
from prompt_bench.methods.search_loop import prompt_loss
from prompt_bench.methods.blackbox import BlackBoxAPI
from prompt_bench.optim.dfo import make_search
from prompt_bench.prompts.projection import RandomProjection
from prompt_bench.tasks.spec import Example

from test_backbones import TASK


@pytest.fixture(scope="module")
def api_factory(minilm_backbone):
    train = encode_split([Example({"sentence": s}, i % 2) for i, s in enumerate(["bad film", "great film", "ok"])],
                         TASK, minilm_backbone, 4)
    return lambda budget: BlackBoxAPI(minilm_backbone, train, budget=budget)


def test_each_candidate_prompt_costs_one_api_call(api_factory):
    api = api_factory(10)
    logits = api.query(torch.zeros(4, 4, api.hidden_size))
    assert logits.shape == (4, 3, 2)
    assert api.calls == 4 and api.remaining == 6


def test_calls_past_the_budget_are_refused_and_not_billed(api_factory):
    api = api_factory(5)
    api.query(torch.zeros(4, 4, api.hidden_size))
    with pytest.raises(BudgetExhausted, match="method.budget"):
        api.query(torch.zeros(2, 4, api.hidden_size))
    assert api.calls == 4


def test_scoring_dev_or_test_batches_does_not_spend_the_budget(api_factory):
    api = api_factory(1)
    batch = api._train
    api.score(batch, torch.zeros(4, api.hidden_size))
    assert api.calls == 0 and api.eval_calls == 1


def test_projection_std_follows_bbt_and_is_fixed_by_the_seed():
    a = RandomProjection(100, 5, 16, embedding_std=0.05, sigma=1.0, alpha=1.0, seed=3, device=torch.device("cpu"))
    b = RandomProjection(100, 5, 16, embedding_std=0.05, sigma=1.0, alpha=1.0, seed=3, device=torch.device("cpu"))
    assert a.std == pytest.approx(0.05 / math.sqrt(100))
    assert a.matrix.std().item() == pytest.approx(a.std, rel=0.05)
    torch.testing.assert_close(a.matrix, b.matrix)
    assert a(torch.ones(2, 100)).shape == (2, 5, 16)


def test_hinge_and_cross_entropy_losses_rank_a_correct_prompt_first():
    labels = torch.tensor([0, 1])
    good = torch.tensor([[3.0, 0.0], [0.0, 3.0]])
    logits = torch.stack([good, -good])
    for kind in ("ce", "hinge"):
        losses = prompt_loss(logits, labels, kind)
        assert losses.shape == (2,) and losses[0] < losses[1]


def _run_search(seed, losses_fn, generations=4):
    search = make_search({"name": "cma", "popsize": 6}, dim=8, budget=100, seed=seed, sigma=1.0)
    asked, told = [], []
    for _ in range(generations):
        z = search.ask()
        losses = losses_fn(z)
        search.tell(losses)
        asked.append(z)
        told.append(list(losses))
    return search, asked, told


def test_the_search_is_deterministic_for_a_seed_and_differs_across_seeds():
    sphere = lambda z: (z**2).sum(1).tolist()
    _, a, _ = _run_search(1, sphere)
    _, b, _ = _run_search(1, sphere)
    _, c, _ = _run_search(2, sphere)
    assert all(np.allclose(x, y) for x, y in zip(a, b))
    assert not np.allclose(a[0], c[0])


def test_replaying_told_losses_recreates_the_search_state_exactly():
    sphere = lambda z: (z**2).sum(1).tolist()
    original, _, told = _run_search(5, sphere)
    replayed = make_search({"name": "cma", "popsize": 6}, dim=8, budget=100, seed=5, sigma=1.0)
    for losses in told:
        replayed.ask(len(losses))
        replayed.tell(losses)
    np.testing.assert_allclose(original.ask(), replayed.ask())


def test_cma_lowers_a_simple_loss():
    search, asked, told = _run_search(0, lambda z: ((z - 1.0) ** 2).sum(1).tolist(), generations=25)
    assert min(told[-1]) < min(told[0])


@pytest.mark.parametrize("name", ["cma", "diag_cma", "de", "pso", "oneplusone", "ngopt", "random_search"])
def test_every_derivative_free_optimizer_asks_a_generation_and_replays_exactly(name):
    cfg = {"name": name, "popsize": 6}
    shifted = lambda z: ((z - 1.0) ** 2).sum(1).tolist()
    search = make_search(cfg, dim=8, budget=200, seed=3, sigma=1.0)
    told = []
    for _ in range(10):
        z = search.ask()
        assert z.shape == (6, 8)
        told.append(shifted(z))
        search.tell(told[-1])
    replayed = make_search(cfg, dim=8, budget=200, seed=3, sigma=1.0)
    for losses in told:
        replayed.ask(len(losses))
        replayed.tell(losses)
    np.testing.assert_allclose(search.ask(), replayed.ask())
    if name != "random_search":
        assert min(min(g) for g in told[5:]) < min(told[0])


def test_an_unknown_optimizer_name_lists_the_known_ones():
    from prompt_bench.errors import ConfigError

    with pytest.raises(ConfigError, match="random_search"):
        make_search({"name": "hill_climb"}, dim=2, budget=10, seed=0, sigma=1.0)
