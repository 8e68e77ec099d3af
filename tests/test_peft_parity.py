"""One step of our `prompt_tuning` equals one step of peft's PromptTuning (huggingface/peft, a second
implementation of Lester et al.) where the two place the prompt the same way: before the whole input of a causal
LM, and before the encoder input of a seq2seq model. Same initial prompt, same batch, same loss (cross-entropy over
the label words' logits where the label is read), same AdamW: the gradients and the updated prompts agree within
float tolerance. (Masked LMs differ by design: we put the prompt after [CLS], peft before it; docs/parity.md.)"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from prompt_bench.batching import encode_split
from prompt_bench.checkpoint import Checkpoint
from prompt_bench.methods.base import Evaluation, WhiteBoxContext
from prompt_bench.methods.prompt_tuning import PromptTuning
from prompt_bench.prompts.soft import initial_prompt
from prompt_bench.tasks.spec import Example

from test_backbones import SENTENCES, TASK, backbone_for

peft = pytest.importorskip("peft")

N_TOKENS, LR, SEED = 4, 0.01, 3
LABELS = [1, 0, 0, 1]


class Quiet:
    def log(self, record, step):
        pass


def our_step(backbone, split, tmp_path):
    """(initial prompt, gradient at it, prompt after one optimizer step) from our prompt_tuning."""
    init = initial_prompt("vocab", N_TOKENS, backbone.word_embeddings.weight, SEED)
    prompt = init.clone().requires_grad_(True)
    batch = split.batch()
    F.cross_entropy(backbone.label_logits(batch, prompt[None])[0].float(), batch.labels).backward()
    # the step itself through the method: the dev score rises after it, so the stepped prompt is the one kept
    scores = iter([0.0, 1.0])
    ctx = WhiteBoxContext(task=TASK, train=split, dev=split,
                          method={"n_prompt_tokens": N_TOKENS, "init": "vocab", "max_steps": 1, "batch_size": len(split),
                                  "eval_every": 1, "lr": LR, "weight_decay": 0.0},
                          optimizer={"name": "adamw", "kind": "gradient"}, seed=SEED, tracker=Quiet(),
                          checkpoint=Checkpoint(tmp_path),
                          evaluation=Evaluation(dev=lambda scorer: {"accuracy": next(scores)}, metric="accuracy"),
                          backbone=backbone)
    stepped = PromptTuning().fit(ctx).prompt
    return init, prompt.grad, stepped


def peft_step(family, folder, backbone, split, init):
    """The same step through peft's PromptTuning on a fresh load of the same model."""
    from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM

    loader, task_type = {"causal_lm": (AutoModelForCausalLM, "CAUSAL_LM"),
                         "seq2seq": (AutoModelForSeq2SeqLM, "SEQ_2_SEQ_LM")}[family]
    base = loader.from_pretrained(folder)
    # one prompt, for the encoder (peft's seq2seq default also allocates a decoder prompt, unused by prompt tuning)
    model = peft.get_peft_model(base, peft.PromptTuningConfig(task_type=task_type, num_virtual_tokens=N_TOKENS,
                                                              prompt_tuning_init="RANDOM", num_transformer_submodules=1))
    model.eval()
    embedding = model.prompt_encoder["default"].embedding.weight
    with torch.no_grad():
        embedding.copy_(init)
    batch = split.batch()
    rows = torch.arange(len(batch))
    if family == "causal_lm":
        logits = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits
        scores = logits[rows, N_TOKENS + batch.target_pos]  # the label is the next token after the input's last one
    else:
        start = torch.full((len(batch), 1), base.config.decoder_start_token_id)
        scores = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask, decoder_input_ids=start).logits[:, 0]
    loss = F.cross_entropy(scores[:, batch.verbalizer.ids], batch.labels)
    loss.backward()
    grad = embedding.grad.detach().clone()
    optimizer = torch.optim.AdamW([embedding], lr=LR, weight_decay=0.0)
    optimizer.step()
    assert all(p.grad is None for n, p in model.named_parameters() if "prompt_encoder" not in n)  # model frozen
    return grad, embedding.detach().clone()


@pytest.mark.parametrize("family", ["causal_lm", "seq2seq"])
def test_one_prompt_tuning_step_equals_one_peft_prompt_tuning_step(family, tiny_models, tmp_path):
    backbone = backbone_for(family, tiny_models)
    examples = [Example({"sentence": s}, y) for s, y in zip(SENTENCES, LABELS)]
    split = encode_split(examples, TASK, backbone, N_TOKENS)
    init, our_grad, ours = our_step(backbone, split, tmp_path)
    their_grad, theirs = peft_step(family, tiny_models[family], backbone, split, init)
    grad_diff = (our_grad - their_grad).abs().max().item()
    step_diff = (ours - theirs).abs().max().item()
    print(f"\npeft parity {family}: max |grad diff| {grad_diff:.3e} (max |grad| {their_grad.abs().max():.3e}), "
          f"max |updated prompt diff| {step_diff:.3e} (max |update| {(theirs - init).abs().max():.3e})")
    assert their_grad.abs().max() > 1e-6  # the step moves the prompt: there is something to compare
    torch.testing.assert_close(our_grad, their_grad, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-6)
    assert (ours - init).abs().max() > 1e-3  # AdamW's first step moves each coordinate by about lr
