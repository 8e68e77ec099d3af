"""`prompt-bench-export <run> --format peft`: a learned soft prompt as a peft PromptTuning adapter.

peft's PromptTuning prepends its virtual tokens to the whole input of a causal LM and to the encoder input of a
seq2seq model, which is where our prompt_tuning (and the black-box methods' inserted prompts) put them, so the
adapter reproduces our logits (tests/test_export.py loads it with peft). Masked LMs are refused: peft puts the
prompt before [CLS], we put it after it (docs/parity.md). So are prompts that are not one block of inserted
vectors (BBT's additive placeholders, P-tuning v2's per-layer prefixes, Dynamic Prompting's pool).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from prompt_bench.errors import PromptBenchError
from prompt_bench.predict import saved_solution

#: our model family -> peft's task type
TASK_TYPES = {"causal_lm": "CAUSAL_LM", "seq2seq": "SEQ_2_SEQ_LM"}
FORMATS = ("peft",)


def peft_adapter(run: Path, out: Path) -> Path:
    """Write `out/adapter_config.json` and `out/adapter_model.safetensors` from `run`'s prompt; return `out`."""
    from safetensors.torch import save_file

    config, _, solution = saved_solution(Path(run))
    meta, method = solution.meta, config["method"]["name"]
    family = meta.get("family")
    if family not in TASK_TYPES:
        raise PromptBenchError(
            f"{run} is a {family} run: peft puts a prompt where we do only for causal_lm and seq2seq models "
            "(for a masked LM peft prepends it before [CLS], we insert it after): export runs of those families")
    if meta.get("prompt_mode", "insert") != "insert":
        raise PromptBenchError(f"{run} holds an additive prompt (method.prompt_mode=add, added onto placeholder "
                               "words), which peft cannot express: train with method.prompt_mode=insert to export")
    # what the run scores with must be the prompt alone (not a deep prompt, prefixes, a pool or thinned networks)
    if solution.prompt is None or solution.tensors or getattr(solution, "thinned", None) is not None:
        raise PromptBenchError(f"method={method} scores with more than one soft prompt of inserted vectors, and "
                               "peft's PromptTuning holds only that (prompt_tuning, bbt, clip_tuning with "
                               "inference=full, gdfo, metapt, ppt and recycling runs export)")
    prompt = solution.prompt.float().contiguous()
    n_tokens, width = prompt.shape
    location = str(meta.get("model_location", ""))
    model_config = _model_config(location)
    out.mkdir(parents=True, exist_ok=True)
    config = {
        "peft_type": "PROMPT_TUNING", "task_type": TASK_TYPES[family], "inference_mode": True,
        "num_virtual_tokens": n_tokens, "token_dim": width,
        # one prompt, before the (encoder) input: peft's seq2seq default would also allocate an unused decoder one
        "num_transformer_submodules": 1,
        "num_attention_heads": model_config.get("num_attention_heads", model_config.get("num_heads")),
        "num_layers": model_config.get("num_hidden_layers", model_config.get("num_layers")),
        "prompt_tuning_init": "RANDOM", "prompt_tuning_init_text": None, "tokenizer_name_or_path": location or None,
        "tokenizer_kwargs": None, "base_model_name_or_path": location or None, "revision": None,
    }
    (out / "adapter_config.json").write_text(json.dumps(config, indent=2))
    save_file({"prompt_embeddings": prompt}, str(out / "adapter_model.safetensors"))
    # how to present an input as the prompt was trained on: the template, the label words, where they are read
    (out / "prompt_bench.json").write_text(json.dumps(
        {k: meta.get(k) for k in ("task", "method", "model", "seed", "template", "verbalizer", "family")}, indent=2))
    return out


def _model_config(location: str) -> dict:
    file = Path(location) / "config.json"
    try:
        return json.loads(file.read_text()) if file.is_file() else {}
    except (json.JSONDecodeError, UnicodeDecodeError):
        return {}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="prompt-bench-export",
                                     description="Write a run's learned prompt in another library's format.")
    parser.add_argument("run", type=Path, help="a finished run folder (holding prompt.safetensors)")
    parser.add_argument("--format", choices=FORMATS, default="peft")
    parser.add_argument("--out", type=Path, default=None, help="output folder (default: <run>/<format>)")
    args = parser.parse_args(argv)
    try:
        out = peft_adapter(args.run, args.out or args.run / args.format)
    except PromptBenchError as err:
        print(f"prompt-bench-export: error: {err}", file=sys.stderr)
        sys.exit(2)
    print(f"wrote a peft PromptTuning adapter to {out} (load it with peft.PeftModel.from_pretrained(base, '{out}'); "
          f"present inputs with the template in {out / 'prompt_bench.json'})")


if __name__ == "__main__":
    main()
