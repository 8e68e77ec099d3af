"""`prompt-bench-export <run> --format peft` writes an adapter that peft loads and that gives our logits."""

from __future__ import annotations

import json

import pytest
import torch

from prompt_bench import experiment
from prompt_bench.artifacts import load_tensors
from prompt_bench.batching import encode_split
from prompt_bench.errors import PromptBenchError
from prompt_bench.export import main, peft_adapter
from prompt_bench.models import ModelSpec, build_backbone
from prompt_bench.tasks.spec import Example
from test_experiment import make

peft = pytest.importorskip("peft")

TRAIN = ["method=prompt_tuning", "method.n_prompt_tokens=3", "method.max_steps=2", "method.eval_every=1",
         "method.batch_size=4"]


def trained(mirror, tiny_models, tmp_path, family, *extra):
    folder = tmp_path / family
    experiment.run(make(mirror, *TRAIN, "model=local", f"model.path={tiny_models[family]}", f"model.family={family}",
                        *extra), folder)
    return folder


@pytest.mark.parametrize("family", ["causal_lm", "seq2seq"])
def test_peft_loads_the_exported_prompt_and_scores_the_label_words_as_we_do(mirror, tiny_models, tmp_path, family):
    from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM

    run = trained(mirror, tiny_models, tmp_path, family)
    main([str(run), "--format", "peft"])
    adapter = run / "peft"
    config = json.loads((adapter / "adapter_config.json").read_text())
    assert config["peft_type"] == "PROMPT_TUNING" and config["num_virtual_tokens"] == 3

    spec = ModelSpec.from_config({"name": "tiny", "family": family, "path": str(tiny_models[family])})
    backbone = build_backbone(spec, device="cpu")
    task = experiment.plan(make(mirror, "method=prompt_tuning")).task
    examples = [Example({"sentence": s}, i % 2) for i, s in enumerate(["a fine film", "dull and long", "great"])]
    batch = encode_split(examples, task, backbone, 3).batch()
    prompt = load_tensors(run / "prompt.safetensors")[0]["prompt"]
    with torch.no_grad():
        ours = backbone.label_logits(batch, prompt[None])[0]

        loader = AutoModelForCausalLM if family == "causal_lm" else AutoModelForSeq2SeqLM
        base = loader.from_pretrained(tiny_models[family])
        model = peft.PeftModel.from_pretrained(base, str(adapter)).eval()
        rows = torch.arange(len(batch))
        if family == "causal_lm":
            logits = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits
            scores = logits[rows, 3 + batch.target_pos]
        else:
            start = torch.full((len(batch), 1), base.config.decoder_start_token_id)
            scores = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask,
                           decoder_input_ids=start).logits[:, 0]
    torch.testing.assert_close(scores[:, batch.verbalizer.ids], ours.float(), atol=1e-5, rtol=1e-5)


def test_prompts_peft_cannot_hold_are_refused_with_the_reason(mirror, tiny_models, tmp_path):
    masked = trained(mirror, tiny_models, tmp_path, "masked_lm")
    with pytest.raises(PromptBenchError, match="for a masked LM peft prepends it before \\[CLS\\]"):
        peft_adapter(masked, tmp_path / "out")
    with pytest.raises(SystemExit) as exit_status:
        main([str(tmp_path / "no_such_run")])
    assert exit_status.value.code == 2


def test_a_black_box_prompt_exports_without_its_search_vector(mirror, tiny_models, tmp_path):
    from test_experiment import SMALL_BBT

    run = tmp_path / "bbt"
    experiment.run(make(mirror, *SMALL_BBT, "method.prompt_mode=insert", "model=local",
                        f"model.path={tiny_models['causal_lm']}", "model.family=causal_lm"), run)
    peft_adapter(run, tmp_path / "out")
    from safetensors.torch import load_file

    saved = load_file(str(tmp_path / "out" / "adapter_model.safetensors"))
    torch.testing.assert_close(saved["prompt_embeddings"], load_tensors(run / "prompt.safetensors")[0]["prompt"].float())
