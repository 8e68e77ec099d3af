"""Parity with txsun1997/Black-Box-Tuning (bbt.py, deepbbt.py, utils.py, metrics.py, models/modeling_*.py).

Each test rebuilds the reference's formula inside the test, from the model's own modules and plain pycma /
numpy, and compares it with what our code computes. docs/parity.md lists every step with its reference line.
"""

from __future__ import annotations

import itertools

import cma
import numpy as np
import pytest
import torch

from prompt_bench.batching import encode_split
from prompt_bench.methods.search_loop import eval_hits, prompt_loss
from prompt_bench.methods.bbtv2 import LayerwiseSearch
from prompt_bench.methods.blackbox import BlackBoxAPI
from prompt_bench.models import ModelSpec, build_backbone
from prompt_bench.optim.dfo import make_search
from prompt_bench.prompts.placeholders import Placeholders
from prompt_bench.prompts.projection import RandomProjection
from prompt_bench.tasks.spec import Example

from test_backbones import SENTENCES, TASK

L = 4
#: the first placeholder id per family: BBT's 1000 where the vocabulary has it (the tiny GPT-2's has ~400 words)
START = {"masked_lm": 1000, "seq2seq": 1000, "causal_lm": 100}


def reference_backbone(family, tiny_models):
    """A backbone configured as the reference scores labels: bare label words, no MLM output bias."""
    spec = ModelSpec.from_config({"name": f"tiny-{family}", "family": family, "path": str(tiny_models[family]),
                                  "label_word_prefix": "", "label_bias": False})
    backbone = build_backbone(spec, device="cpu")
    return backbone


def placeholder_batch(backbone):
    examples = [Example({"sentence": s}, i % 2) for i, s in enumerate(SENTENCES)]
    return encode_split(examples, TASK, backbone, placeholders=Placeholders(L, START[backbone.family], " .")).batch()


def reference_ids(tokenizer, sentence, family):
    """dataloader.py: '<placeholders> . <sentence> . It was <mask> .', the placeholders as vocabulary ids."""
    if family == "masked_lm":
        rest = tokenizer(f" . {sentence} . It was {tokenizer.mask_token} .", add_special_tokens=False).input_ids
        return [tokenizer.cls_token_id, *range(START[family], START[family] + L), *rest, tokenizer.sep_token_id]
    # dataloader_gpt.py / dataloader_t5.py put the prompt first; our causal template ends before the label word
    rest = tokenizer(f" . {sentence} . It was", add_special_tokens=False).input_ids
    return [*range(START[family], START[family] + L), *rest]


def test_placeholder_rows_are_the_reference_input_ids(tiny_models):
    for family in ("masked_lm", "causal_lm"):
        backbone = reference_backbone(family, tiny_models)
        batch = placeholder_batch(backbone)
        for row, sentence in enumerate(SENTENCES):
            expected = reference_ids(backbone.tokenizer, sentence, family)
            assert batch.input_ids[row, : len(expected)].tolist() == expected
            assert int(batch.attention_mask[row].sum()) == len(expected)


def test_masked_lm_logits_equal_the_prompt_added_to_the_embedding_layer_output(tiny_models):
    """modeling_roberta.py:712-724: embedding_output + [0, A z, 0, ...]; bbt.py:199 zeroes the LM head bias;
    metrics.py scores tokenizer.encode(word, add_special_tokens=False)[0] at the mask."""
    backbone = reference_backbone("masked_lm", tiny_models)
    batch = placeholder_batch(backbone)
    torch.manual_seed(0)
    prompts = torch.randn(3, L, backbone.hidden_size) * 0.1
    ours = backbone.label_logits(batch, prompts)

    model, tokenizer = backbone.model, backbone.tokenizer
    label_ids = [tokenizer.encode(w, add_special_tokens=False)[0] for w in TASK.verbalizer]
    head_bias = model.get_output_embeddings().bias
    for p, prompt in enumerate(prompts):
        added = lambda module, args, output: output + torch.cat(
            [torch.zeros(output.shape[0], 1, output.shape[2]), prompt.expand(output.shape[0], -1, -1),
             torch.zeros(output.shape[0], output.shape[1] - 1 - L, output.shape[2])], dim=1)
        handle = model.base_model.embeddings.register_forward_hook(added)
        try:
            with torch.no_grad():
                hidden = model.base_model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).last_hidden_state
                mask_pos = (batch.input_ids == tokenizer.mask_token_id).float().argmax(1)
                vocab = model.cls(hidden[torch.arange(len(batch)), mask_pos]) - head_bias  # bias zeroed
        finally:
            handle.remove()
        torch.testing.assert_close(ours[p], vocab[:, label_ids], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("family", ["causal_lm", "seq2seq"])
def test_decoder_families_add_the_prompt_to_the_input_embeddings(family, tiny_models):
    """modeling_gpt2.py / modeling_t5.py: inputs_embeds + [A z, 0, ...] (the prompt first, no [CLS])."""
    backbone = reference_backbone(family, tiny_models)
    batch = placeholder_batch(backbone)
    torch.manual_seed(1)
    prompts = torch.randn(2, L, backbone.hidden_size) * 0.1
    ours = backbone.label_logits(batch, prompts)
    model = backbone.model
    label_ids = [backbone.tokenizer.encode(w, add_special_tokens=False)[0] for w in TASK.verbalizer]
    with torch.no_grad():
        for p, prompt in enumerate(prompts):
            embeds = model.get_input_embeddings()(batch.input_ids).clone()
            embeds[:, :L] += prompt
            if family == "causal_lm":
                out = model(inputs_embeds=embeds, attention_mask=batch.attention_mask).logits
                last = batch.attention_mask.sum(1) - 1
                vocab = out[torch.arange(len(batch)), last]
            else:
                start = torch.full((len(batch), 1), model.config.decoder_start_token_id)
                vocab = model(inputs_embeds=embeds, attention_mask=batch.attention_mask, decoder_input_ids=start).logits[:, 0]
            torch.testing.assert_close(ours[p], vocab[:, label_ids], rtol=1e-4, atol=1e-5)


def test_a_zero_prompt_is_the_hard_prompt_of_the_placeholder_words(tiny_models):
    backbone = reference_backbone("masked_lm", tiny_models)
    batch = placeholder_batch(backbone)
    zero = backbone.label_logits(batch, torch.zeros(1, L, backbone.hidden_size))[0]
    hard = backbone.label_logits(batch)[0]  # the placeholder words alone, nothing added
    torch.testing.assert_close(zero, hard)


def test_label_words_are_the_bare_words_the_reference_encodes(tiny_models):
    backbone = reference_backbone("causal_lm", tiny_models)  # byte-level BPE: "bad" and " bad" differ
    tokenizer = backbone.tokenizer
    bare = backbone.verbalizer(TASK.verbalizer).ids.tolist()
    assert bare == [tokenizer.encode(w, add_special_tokens=False)[0] for w in TASK.verbalizer]
    spaced = build_backbone(ModelSpec.from_config({"name": "t", "family": "causal_lm", "path": str(tiny_models["causal_lm"])}),
                            device="cpu").verbalizer(TASK.verbalizer).ids.tolist()
    assert spaced == [tokenizer.encode(" " + w, add_special_tokens=False)[0] for w in TASK.verbalizer]
    assert spaced != bare


def test_placeholders_that_would_be_special_tokens_are_refused(tiny_models):
    from prompt_bench.errors import ConfigError

    backbone = reference_backbone("masked_lm", tiny_models)
    with pytest.raises(ConfigError, match=r"\[MASK\].*method.placeholder_start"):
        Placeholders(4, 100, " .").ids(backbone.tokenizer, "tiny")  # WordPiece ids 100..103: [UNK] [CLS] [SEP] [MASK]


def test_hinge_loss_is_utils_hinge_loss_with_margin_2_summed_over_wrong_classes():
    logits = torch.tensor([[[1.0, 0.0, 3.0], [0.0, 5.0, 1.0]]])  # one candidate, two examples, three classes
    labels = torch.tensor([0, 1])
    # example 0 (gold 0): max(0, 0-1+2) + max(0, 3-1+2) = 1 + 4; example 1 (gold 1): 0 + 0; bbt.py:394 divides by B
    assert prompt_loss(logits, labels, "hinge").item() == pytest.approx((1 + 4 + 0) / 2)
    assert prompt_loss(logits, labels, "hinge", margin=1.0).item() == pytest.approx((0 + 3 + 0) / 2)


def test_projection_std_is_alpha_times_the_embeddings_population_std_over_sqrt_d_sigma(minilm_backbone):
    api = BlackBoxAPI(minilm_backbone, encode_split([Example({"sentence": "x"}, 0)], TASK, minilm_backbone, 2), budget=1)
    std_hat = float(np.std(minilm_backbone.word_embeddings.weight.detach().numpy().reshape(-1)))  # bbt.py:283
    assert api.embedding_std == pytest.approx(std_hat, rel=1e-6)
    d, sigma, alpha = 500, 0.2, 0.2
    projection = RandomProjection(d, 10, api.hidden_size, api.embedding_std, sigma, alpha, seed=0, device=torch.device("cpu"))
    assert projection.std == pytest.approx(alpha * std_hat / (np.sqrt(d) * sigma), rel=1e-6)  # bbt.py:285
    assert projection.matrix.std().item() == pytest.approx(projection.std, rel=0.01)


def test_cma_asks_the_candidates_of_a_plain_pycma_loop_with_bbt_options():
    d, popsize, sigma, seed, budget = 30, 20, 1.0, 42, 200
    es = cma.CMAEvolutionStrategy(d * [0], sigma, inopts={"seed": seed, "popsize": popsize,
                                                         "maxiter": budget // popsize, "verbose": -1})  # bbt.py:710-718
    ours = make_search({"name": "cma", "popsize": popsize, "bound": None}, d, budget, seed, sigma)
    loss = lambda X: [float(((np.asarray(x) - 0.5) ** 2).sum()) for x in X]
    for _ in range(budget // popsize):
        X = es.ask()
        z = ours.ask()
        np.testing.assert_array_equal(z, np.asarray(X))
        es.tell(X, loss(X))
        ours.tell(loss(z))
    assert ours.updates == es.countiter == budget // popsize


def test_bbtv2_layer_searches_share_one_stream_as_deepbbt_does():
    d, popsize, layers, seed = 12, 8, 3, 7
    np.random.seed(seed)  # deepbbt.py:708-710: every layer's CMA-ES seeds numpy's global stream with the run's seed
    es_list = [cma.CMAEvolutionStrategy(d * [0], 1.0, inopts={"seed": seed, "popsize": popsize, "verbose": -1})
               for _ in range(layers)]
    ours = LayerwiseSearch({"name": "cma", "popsize": popsize}, layers, d, budget=400, seed=seed, sigma=1.0)
    loss = lambda X: [float((np.asarray(x) ** 2).sum()) for x in X]
    for _ in range(2):  # deepbbt.py:714-718: rounds over the layers, one generation each
        for layer, es in enumerate(es_list):
            X = es.ask()
            z = ours.ask().reshape(popsize, layers, d)
            np.testing.assert_array_equal(z[:, layer], np.asarray(X))
            es.tell(X, loss(X))
            ours.tell(loss(z[:, layer]))


def test_injecting_a_point_every_generation_keeps_every_cma_update():
    """GDFO's refined point joins a generation through pycma's inject: 60 generations, 60 updates."""
    search = make_search({"name": "cma", "popsize": 20}, dim=50, budget=1200, seed=0, sigma=1.0)
    rng = np.random.RandomState(0)
    for _ in range(60):
        search.inject(rng.randn(50) * 0.1)
        z = search.ask()
        assert len(z) == 20
        search.tell((z ** 2).sum(1).tolist())
    assert search.updates == 60


def test_dev_is_evaluated_on_the_candidate_scored_at_each_eval_every_th_call():
    """bbt.py:501: `num_call % eval_every == 0` after each single-candidate call, in serial mode."""
    for calls_before, n, cost, every in itertools.product([0, 7, 95, 100], [1, 6, 20], [1, 4], [3, 20, 100]):
        expected, call = [], calls_before
        for i in range(n):
            for _ in range(cost):  # a candidate on N thinned networks is N calls, one after another
                call += 1
                if call % every == 0:
                    expected.append(i)
        assert eval_hits(calls_before, n, cost, every) == sorted(set(expected))


def test_max_length_bounds_the_text_and_never_cuts_the_prompt(tiny_models):
    backbone = reference_backbone("masked_lm", tiny_models)
    long = Example({"sentence": " ".join(["moving"] * 200)}, 1)
    task = TASK.__class__(**{**vars(TASK), "max_length": 20})
    row = encode_split([long], task, backbone, placeholders=Placeholders(L, 1000, " ."))
    ids = row.ids[0]
    assert ids[1 : 1 + L] == list(range(1000, 1000 + L))  # every placeholder word kept
    assert len(ids) - L <= 20 and backbone.tokenizer.mask_token_id in ids and row.truncated == 1
    inserted = encode_split([long], task, backbone, prompt_len=L)
    assert len(inserted.ids[0]) <= 20 and backbone.tokenizer.mask_token_id in inserted.ids[0]


@pytest.mark.parametrize("family", ["masked_lm", "causal_lm", "seq2seq", "sentence_encoder"])
def test_added_prompts_scored_as_a_population_equal_one_at_a_time(family, tiny_models):
    spec = {"name": f"tiny-{family}", "family": family, "path": str(tiny_models[family])}
    backbone = build_backbone(ModelSpec.from_config(spec), device="cpu", max_tokens_per_forward=64)  # forces chunks
    batch = placeholder_batch(backbone) if family != "sentence_encoder" else encode_split(
        [Example({"sentence": s}, 0) for s in SENTENCES], TASK, backbone, placeholders=Placeholders(L, 1000, " .")).batch()
    torch.manual_seed(2)
    prompts = torch.randn(5, L, backbone.hidden_size) * 0.1
    together = backbone.label_logits(batch, prompts)
    for p in range(5):
        torch.testing.assert_close(together[p], backbone.label_logits(batch, prompts[p : p + 1])[0], rtol=1e-5, atol=1e-5)
    assert not torch.allclose(together[0], together[1])  # the prompt reaches the logits
