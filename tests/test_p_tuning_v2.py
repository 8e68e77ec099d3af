"""P-tuning v2: a key/value prefix at every layer of every family, trained with a linear head or a verbalizer."""

from __future__ import annotations

import pytest
import torch

from prompt_bench import experiment
from prompt_bench.artifacts import load_tensors
from prompt_bench.methods.p_tuning_v2 import PrefixSolution
from prompt_bench.models.prefixes import PREFIX, PREFIX_MASK, enable_prefixes

from test_backbones import FAMILIES, backbone_for, batch_for
from test_experiment import make, run_interrupted_then_resumed

TINY_PTV2 = ["method=p_tuning_v2", "method.n_prompt_tokens=3", "method.max_steps=6", "method.eval_every=3",
             "method.batch_size=4", "task=cb"]


@pytest.fixture(scope="module", params=FAMILIES)
def prefixed(request, tiny_models):
    backbone = backbone_for(request.param, tiny_models)
    return backbone, enable_prefixes(backbone)


def no_prompt(backbone, n=1):
    return torch.zeros(n, 0, backbone.hidden_size)


def random_prefix(shape, n=1, length=3, scale=1.0):
    return torch.randn(n, shape.n_layers, 2, length, shape.kv_dim, generator=torch.Generator().manual_seed(n)) * scale


@torch.no_grad()
def test_a_zero_length_or_fully_masked_prefix_leaves_the_models_outputs_unchanged(prefixed):
    backbone, shape = prefixed
    batch = batch_for(backbone, prompt_len=0)
    own = backbone.label_logits(batch)
    empty = backbone.label_logits(batch, no_prompt(backbone), {PREFIX: random_prefix(shape, length=0)})
    hidden = backbone.label_logits(batch, no_prompt(backbone),
                                   {PREFIX: random_prefix(shape), PREFIX_MASK: torch.zeros(1, 3, dtype=torch.bool)})
    torch.testing.assert_close(empty, own, rtol=0, atol=0)
    torch.testing.assert_close(hidden, own, rtol=1e-4, atol=1e-5)


@torch.no_grad()
def test_a_prefix_changes_the_outputs_at_every_family(prefixed):
    backbone, shape = prefixed
    batch = batch_for(backbone, prompt_len=0)
    own = backbone.label_logits(batch)
    prefixed_logits = backbone.label_logits(batch, no_prompt(backbone), {PREFIX: random_prefix(shape, scale=3.0)})
    assert (prefixed_logits - own).abs().max() > 1e-3


@torch.no_grad()
def test_a_population_of_prefixes_is_scored_in_one_batch_as_if_one_at_a_time(prefixed):
    backbone, shape = prefixed
    batch = batch_for(backbone, prompt_len=0)
    prefixes = random_prefix(shape, n=3)
    together = backbone.label_logits(batch, no_prompt(backbone, 3), {PREFIX: prefixes})
    alone = torch.cat([backbone.label_logits(batch, no_prompt(backbone), {PREFIX: prefixes[i : i + 1]}) for i in range(3)])
    torch.testing.assert_close(together, alone, rtol=1e-4, atol=1e-5)


def test_gradients_reach_the_prefix_and_not_the_frozen_model(prefixed):
    backbone, shape = prefixed
    batch = batch_for(backbone, prompt_len=0)
    prefix = random_prefix(shape).requires_grad_(True)
    backbone.label_logits(batch, no_prompt(backbone), {PREFIX: prefix})[0].sum().backward()
    assert prefix.grad is not None and prefix.grad.abs().sum() > 0
    assert all(p.grad is None for p in backbone.model.parameters())


def test_p_tuning_v2_trains_a_prefix_and_head_that_change_the_outputs_and_score_as_saved(mirror, tmp_path, minilm_backbone):
    results = experiment.run(make(mirror, *TINY_PTV2), tmp_path / "run")
    assert results["budget_used"] == 6 and results["method_info"]["head"] == "linear"
    tensors, _ = load_tensors(tmp_path / "run" / "prompt.safetensors")
    assert tensors["prefix"].shape == (6, 2, 3, 384)  # MiniLM: 6 layers, 12 heads x 32
    assert tensors["head.weight"].shape == (3, 384)  # CB has 3 classes
    # what was saved scores like the run: the reported test metric is reproduced from the artifact alone
    from prompt_bench.batching import encode_split
    from prompt_bench.evaluation import score_split
    from prompt_bench.tasks import loading
    from prompt_bench.tasks.spec import TaskSpec
    from omegaconf import OmegaConf

    cfg = make(mirror, *TINY_PTV2)
    task = TaskSpec.from_config(OmegaConf.to_container(cfg.task, resolve=True))
    test = encode_split(loading.load_split(task, "test", mirror).examples, task, minilm_backbone, 0)
    scorer = PrefixSolution(prompt=None, tensors=tensors).scorer(minilm_backbone)
    assert score_split(scorer, test, task.metric, 32) == pytest.approx(results["test"], abs=1e-6)
    with torch.no_grad():
        batch = test.batch(list(range(8)))
        trained = PrefixSolution(prompt=None, tensors={"prefix": tensors["prefix"]}).scorer(minilm_backbone)(batch)
        assert (trained - minilm_backbone.label_logits(batch)[0]).abs().max() > 1e-3


def test_p_tuning_v2_with_the_verbalizer_and_the_mlp_reparameterisation_on_a_causal_lm(mirror, tmp_path, tiny_models):
    model = ["model=local", f"model.path={tiny_models['causal_lm']}", "model.family=causal_lm"]
    results = experiment.run(make(mirror, *model, *TINY_PTV2, "method.head=verbalizer", "method.prefix_projection=true",
                                  "method.prefix_hidden_size=16"), tmp_path / "run")
    tensors, _ = load_tensors(tmp_path / "run" / "prompt.safetensors")
    assert "head.weight" not in tensors and results["method_info"]["prefix_projection"] is True


def test_an_interrupted_p_tuning_v2_run_resumes_to_the_uninterrupted_result(mirror, tmp_path, tiny_models):
    model = ["model=local", f"model.path={tiny_models['masked_lm']}", "model.family=masked_lm"]
    def run(folder):
        return experiment.run(make(mirror, *model, *TINY_PTV2), folder)

    reference = run(tmp_path / "reference")
    resumed = run_interrupted_then_resumed(run, tmp_path / "run", at=5)
    assert resumed["test"] == reference["test"]
    a, _ = load_tensors(tmp_path / "reference" / "prompt.safetensors")
    b, _ = load_tensors(tmp_path / "run" / "prompt.safetensors")
    torch.testing.assert_close(a["prefix"], b["prefix"], rtol=0, atol=0)


def test_bad_p_tuning_v2_settings_are_refused_before_loading(mirror):
    from prompt_bench.errors import ConfigError

    with pytest.raises(ConfigError, match="method.head"):
        experiment.plan(make(mirror, *TINY_PTV2, "method.head=pooler"))


# -- method.head=reference: THUDM/P-tuning-v2's own head (plain text -> [CLS] pooler -> dropout -> linear) ------------

PAIR_TASK = dict(name="pairs", benchmark="test", labels=["0", "1", "2"], verbalizer=["Yes", "No", "Maybe"],
                 template="{premise} ? {mask} , {hypothesis}", metric="accuracy",
                 plain_input=["{premise}", "{hypothesis}"],
                 mirror={"format": "superglue_jsonl", "dir": "x", "files": {"train": "a", "test": "b"},
                         "fields": {"premise": "p", "hypothesis": "h"}},
                 hub={"path": "x", "name": None, "splits": {"train": "train", "test": "test"},
                      "fields": {"premise": "p", "hypothesis": "h"}})
PAIRS = [("a wonderful , moving film", "it is good"), ("dull", "it is great"), ("the plot is terrible", "it is bad"),
         ("a wonderful , moving film", "it is good")]  # the last row repeats the first


def plain_batch(backbone):
    from prompt_bench.plain_input import encode_plain
    from prompt_bench.tasks.spec import Example, TaskSpec

    task = TaskSpec.from_config(PAIR_TASK)
    examples = [Example({"premise": p, "hypothesis": h}, i % 3) for i, (p, h) in enumerate(PAIRS)]
    return encode_plain(examples, task, backbone, 0), task


def reference_head(backbone, dropout=0.1, seed=0):
    from prompt_bench.models.pooler import pooler_weights
    from prompt_bench.prompts.prefix import linear_head

    weight, bias, source = pooler_weights(backbone, seed)
    return linear_head(backbone.hidden_size, 3, seed, dropout, (weight, bias)), source


def test_plain_input_is_the_tokenizers_sentence_pair_with_no_template_and_no_mask(minilm_backbone):
    split, _ = plain_batch(minilm_backbone)
    tokenizer = minilm_backbone.tokenizer
    assert split.ids[0] == tokenizer(*PAIRS[0]).input_ids  # [CLS] premise [SEP] hypothesis [SEP]
    assert tokenizer.mask_token_id not in split.ids[0] and split.target == [0, 0, 0, 0]


@torch.no_grad()
def test_the_reference_head_is_the_models_pooler_output_through_a_linear_layer_one_logit_per_class(minilm_backbone):
    split, _ = plain_batch(minilm_backbone)
    batch = split.batch()
    head, source = reference_head(minilm_backbone)
    assert source == "model"  # MiniLM's BertModel has its pooler
    ours = minilm_backbone.label_logits(batch, head=head)[0]
    assert ours.shape == (4, 3)
    # rebuilt from the model's own outputs: BertModel's pooler_output is tanh(dense([CLS] state))
    pooled = minilm_backbone.model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).pooler_output
    torch.testing.assert_close(ours, pooled @ head.weight.T + head.bias, rtol=1e-4, atol=1e-5)


@torch.no_grad()
def test_the_reference_heads_dropout_acts_in_train_mode_only(minilm_backbone):
    split, _ = plain_batch(minilm_backbone)
    batch = split.batch()
    head, _ = reference_head(minilm_backbone, dropout=0.5)
    with torch.no_grad():
        head.weight.normal_(0, 1.0)  # big enough for dropped units to show in every logit

    def logits():
        return minilm_backbone.label_logits(batch, head=head)[0]

    assert not head.training  # built in eval mode: deterministic until the training loop switches it
    first, second = logits(), logits()
    torch.testing.assert_close(first, second, rtol=0, atol=0)
    torch.testing.assert_close(first[0], first[3], rtol=0, atol=0)  # the repeated row scores the same
    head.train()
    noisy = logits()
    head.eval()
    assert (noisy - first).abs().max() > 1e-3
    assert (noisy[0] - noisy[3]).abs().max() > 1e-3  # each example draws its own mask
    head.dropout.p = 0.0
    head.train()
    torch.testing.assert_close(logits(), first, rtol=1e-6, atol=1e-6)  # p = 0: train mode changes nothing
    head.eval()


def test_the_prefix_dropout_draws_a_mask_per_example_in_training_and_none_in_evaluation(minilm_backbone):
    from prompt_bench.methods.p_tuning_v2 import prefix_scorer

    shape = enable_prefixes(minilm_backbone)
    split, _ = plain_batch(minilm_backbone)
    batch = split.batch()
    prefix = random_prefix(shape, scale=3.0)[0]
    dropout = torch.nn.Dropout(0.5)
    score = prefix_scorer(minilm_backbone, lambda: prefix, None, dropout)
    with torch.no_grad():
        dropout.eval()
        plain = score(batch)
        dropout.train()
        noisy = score(batch)
        dropout.eval()
    torch.testing.assert_close(plain[0], plain[3], rtol=0, atol=0)
    assert (noisy[0] - noisy[3]).abs().max() > 1e-4 and (noisy - plain).abs().max() > 1e-4


def test_a_checkpoints_pooler_is_read_when_the_masked_lm_drops_it_else_one_is_drawn(tmp_path, tiny_models):
    from transformers import AutoTokenizer, BertConfig, BertForPreTraining

    from test_backbones import backbone_for

    drawn = backbone_for("masked_lm", tiny_models)  # saved from BertForMaskedLM: no pooler in the checkpoint
    head, source = reference_head(drawn)
    assert source == "initialised"  # as transformers draws a missing pooler: N(0, initializer_range), zero bias
    assert head.pooler_weight.std().item() == pytest.approx(0.02, rel=0.2) and head.pooler_bias.abs().max() == 0
    # a BERT checkpoint with its pooler (BertForPreTraining), loaded as a masked LM, which drops it
    torch.manual_seed(0)
    config = BertConfig(vocab_size=drawn.tokenizer.vocab_size, hidden_size=32, num_hidden_layers=2,
                        num_attention_heads=2, intermediate_size=64, max_position_embeddings=128)
    pretraining = BertForPreTraining(config)
    pretraining.save_pretrained(tmp_path / "bert")
    AutoTokenizer.from_pretrained(tiny_models["masked_lm"]).save_pretrained(tmp_path / "bert")
    from prompt_bench.models import ModelSpec, build_backbone

    masked = build_backbone(ModelSpec.from_config({"name": "bert", "family": "masked_lm", "path": str(tmp_path / "bert")}),
                            device="cpu")
    assert not hasattr(masked.model.base_model, "pooler") or masked.model.base_model.pooler is None
    head, source = reference_head(masked)
    assert source == "checkpoint"
    torch.testing.assert_close(head.pooler_weight, pretraining.bert.pooler.dense.weight.detach(), rtol=0, atol=0)
    torch.testing.assert_close(head.pooler_bias, pretraining.bert.pooler.dense.bias.detach(), rtol=0, atol=0)


REFERENCE = ["method.head=reference", "method.dropout=0.1", "method.model_dropout=true", "method.prefix_init_std=0.02",
             "optimizer.schedule=linear", "optimizer.max_grad_norm=1.0"]


def test_the_reference_recipe_trains_resumes_and_its_artifact_reproduces_the_test_score(mirror, tmp_path, minilm_backbone):
    def run(folder):
        return experiment.run(make(mirror, *TINY_PTV2, *REFERENCE), folder)

    reference = run(tmp_path / "reference")
    info = reference["method_info"]
    assert (info["head"], info["dropout"], info["model_dropout"], info["pooler"]) == ("reference", 0.1, True, "model")
    resumed = run_interrupted_then_resumed(run, tmp_path / "run", at=5)
    assert resumed["test"] == reference["test"]  # dropout masks come from the saved RNG state
    assert not minilm_backbone.model.training
    tensors, _ = load_tensors(tmp_path / "reference" / "prompt.safetensors")
    assert tensors["head.weight"].shape == (3, 384) and tensors["head.pooler_weight"].shape == (384, 384)
    assert tensors["prefix"].std().item() < 0.1  # N(0, 0.02) init, 6 steps of lr 0.01
    from omegaconf import OmegaConf

    from prompt_bench.evaluation import score_split
    from prompt_bench.plain_input import encode_plain
    from prompt_bench.tasks import loading
    from prompt_bench.tasks.spec import TaskSpec

    task = TaskSpec.from_config(OmegaConf.to_container(make(mirror, *TINY_PTV2).task, resolve=True))
    test = encode_plain(loading.load_split(task, "test", mirror).examples, task, minilm_backbone, 0)
    scorer = PrefixSolution(prompt=None, tensors=tensors).scorer(minilm_backbone)
    assert score_split(scorer, test, task.metric, 32) == pytest.approx(reference["test"], abs=1e-6)


def test_the_reference_head_needs_a_tasks_plain_text(mirror):
    from prompt_bench.errors import ConfigError

    with pytest.raises(ConfigError, match="plain_input"):
        experiment.plan(make(mirror, *TINY_PTV2, "method.head=reference", "~task.plain_input"))
    with pytest.raises(ConfigError, match="method.dropout"):
        experiment.plan(make(mirror, *TINY_PTV2, "method.dropout=1.5"))
