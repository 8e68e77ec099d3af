"""The prepared GPU check (not a test): `bash scripts/gpu_check.sh` on a GPU box prints ONE markdown table.

RoBERTa-large-shaped and T5-large-shaped models (transformers' RobertaConfig / T5Config at the large sizes:
24 layers, 1024 wide, 16 heads; T5 as google/t5-large-lm-adapt, the conf/model/t5_large_lm.yaml model, with
its 24 decoder layers) are built from their configs with random weights: no hub, no download, and speed does
not depend on the weights. Inputs are synthetic SST-2-shaped sentences of random words from the packaged
MiniLM tokenizer's vocabulary (its ids fit both vocabularies), templated and tokenized as a real run does them,
so no data mirror is needed either. In one process, so every ratio compares like with like:

  - one BBT generation (popsize 20 x 32 train examples, 50 prompt tokens), population-batched vs one candidate
    at a time (scripts/bench_dfo.py's batched_vs_sequential), in fp32 and bf16 (bf16 where compute.bf16=auto
    would choose it: a GPU with native bf16, or a CPU with AVX512-BF16/AMX);
  - the peak memory of one batched generation (torch.cuda.max_memory_allocated on CUDA; the resident-memory
    high-water mark on CPU);
  - 8,000 BBT API calls (BBT's budget: 400 generations of 20) extrapolated from the measured generation times,
    beside the reference's ~13 minutes on an RTX 3090 (the issue's figure for txsun1997/Black-Box-Tuning);
  - a BBTv2 generation with and without its prefix cache (BBTv2.fit over one generation per layer, timed both
    ways, and whether the two searches end on the same prompt), once prompt_bench/methods/bbtv2.py has a
    `prefix_cache` option; until then the row says it is not available;
  - one prompt tuning and one P-tuning v2 training step, ours vs peft, on the RoBERTa-shaped model
    (scripts/bench_gradient.py's steps, timed interleaved; fp32);
  - the GPU pool (prompt_bench/gpu_pool.py) claiming a real device, before anything here starts CUDA, the way
    every job claims one.

`--device cpu --small` runs the same code on tiny models of the same two shapes, with fewer sizes, in well under
a minute on 2 CPU cores (tests/test_gpu_check.py runs it, so this script cannot rot on CPU-only CI).
Writes the table's numbers as JSON too (default outputs/bench/gpu_check.json).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

from prompt_bench import gpu_pool  # noqa: E402  (imports no torch: the pool is claimed before CUDA starts)

#: the issue's reference: BBT's 8,000 API calls took about 13 minutes on one RTX 3090
REFERENCE_MIN = 13.0
BUDGET = 8000

FULL = {
    "roberta-large-shaped": {"family": "masked_lm", "config": "roberta", "hidden": 1024, "layers": 24, "heads": 16,
                             "ff": 4096, "vocab": 50265},
    "t5-large-shaped": {"family": "seq2seq", "config": "t5", "hidden": 1024, "layers": 24, "heads": 16, "ff": 2816,
                        "vocab": 32128},
}
SMALL = {
    "roberta-shaped (tiny)": {"family": "masked_lm", "config": "roberta", "hidden": 64, "layers": 2, "heads": 2,
                              "ff": 256, "vocab": 50265},
    "t5-shaped (tiny)": {"family": "seq2seq", "config": "t5", "hidden": 64, "layers": 2, "heads": 2, "ff": 128,
                         "vocab": 32128},
}


def build_config(shape: dict, tokenizer):
    """A transformers config of `shape` (RoBERTa: RobertaConfig's large sizes; T5: t5-large-lm-adapt's, v1.1
    gated-gelu, untied head) whose special ids are the tokenizer's."""
    from transformers import RobertaConfig, T5Config

    if shape["config"] == "roberta":
        return RobertaConfig(vocab_size=shape["vocab"], hidden_size=shape["hidden"], num_hidden_layers=shape["layers"],
                             num_attention_heads=shape["heads"], intermediate_size=shape["ff"],
                             max_position_embeddings=514, type_vocab_size=1, pad_token_id=1, layer_norm_eps=1e-5)
    return T5Config(vocab_size=shape["vocab"], d_model=shape["hidden"], d_kv=shape["hidden"] // shape["heads"],
                    d_ff=shape["ff"], num_layers=shape["layers"], num_decoder_layers=shape["layers"],
                    num_heads=shape["heads"], feed_forward_proj="gated-gelu", tie_word_embeddings=False,
                    decoder_start_token_id=tokenizer.pad_token_id, pad_token_id=tokenizer.pad_token_id)


def build_backbone(name: str, shape: dict, tokenizer, device):
    """Our backbone around a randomly initialised model of `shape`, built on `device` (fp32, frozen, eval)."""
    import torch
    from transformers import AutoModelForMaskedLM, AutoModelForSeq2SeqLM

    from prompt_bench.models import ModelSpec
    from prompt_bench.models.masked_lm import MaskedLMBackbone
    from prompt_bench.models.seq2seq import Seq2SeqBackbone

    config = build_config(shape, tokenizer)
    auto = AutoModelForMaskedLM if shape["family"] == "masked_lm" else AutoModelForSeq2SeqLM
    torch.manual_seed(0)
    with device:  # initialise the weights where they will run (a 24-layer init on the CPU takes a while)
        model = auto.from_config(config, dtype=torch.float32)
    model.eval()
    model.requires_grad_(False)
    spec = ModelSpec(name=name, family=shape["family"], location="(random weights)", is_local=True)
    adapter = MaskedLMBackbone if shape["family"] == "masked_lm" else Seq2SeqBackbone
    # compute.max_tokens_per_forward=auto, as models.build_backbone picks it
    return adapter(spec, model, tokenizer, device, max_tokens_per_forward=65536 if device.type == "cuda" else 2048)


def synthetic_examples(tokenizer, n: int, seed: int):
    """n SST-2-shaped examples (5 to 40 random vocabulary words, alternating labels)."""
    import random

    from prompt_bench.tasks.spec import Example

    words = sorted(w for w in tokenizer.get_vocab() if w.isalpha() and w.isascii() and len(w) > 2)
    rng = random.Random(seed)
    return [Example(fields={"sentence": " ".join(rng.choices(words, k=rng.randint(5, 40)))}, label=i % 2)
            for i in range(n)]


def sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def peak_generation_mb(backbone, train, popsize: int, prompt_len: int) -> float | None:
    """Memory one population-batched generation takes above the loaded model (None: this OS cannot tell)."""
    import torch

    import bench_dfo

    prompts = backbone.word_embeddings.weight[1000 : 1000 + prompt_len].detach().float()[None].repeat(popsize, 1, 1)
    batch = train.batch()
    if backbone.device.type == "cuda":
        sync(backbone.device)
        torch.cuda.reset_peak_memory_stats(backbone.device)
        base = torch.cuda.memory_allocated(backbone.device)
        with torch.no_grad():
            backbone.label_logits(batch, prompts)
        sync(backbone.device)
        return (torch.cuda.max_memory_allocated(backbone.device) - base) / 2**20
    try:
        base = bench_dfo._reset_rss_peak()
    except OSError:  # /proc/self/clear_refs not writable (some containers): no CPU peak
        return None
    with torch.no_grad():
        backbone.label_logits(batch, prompts)
    return (bench_dfo._proc_status_kb("VmHWM") - base) / 1024


def prefix_cache_available() -> bool:
    """Whether BBTv2 has its `prefix_cache` option yet (issue 22, item 1): then the BBTv2 row measures it."""
    return "prefix_cache" in (ROOT / "prompt_bench" / "methods" / "bbtv2.py").read_text()


def bbtv2_prefix_cache(backbone, task, train, dev, popsize: int, prompt_len: int) -> dict:
    """Seconds per BBTv2 generation without and with `method.prefix_cache`: BBTv2.fit over one generation per
    layer (every layer searched once), each way; and whether both end on the same prompt."""
    if not prefix_cache_available():
        return {"available": False,
                "note": "not available: prompt_bench/methods/bbtv2.py has no prefix_cache option yet"}
    import torch
    from omegaconf import OmegaConf

    from prompt_bench.checkpoint import Checkpoint
    from prompt_bench.evaluation import score_split
    from prompt_bench.methods.base import BlackBoxContext, Evaluation
    from prompt_bench.methods.bbtv2 import BBTv2
    from prompt_bench.methods.blackbox import BlackBoxAPI

    import bench_dfo

    n_layers = len(backbone.transformer_layers())
    budget = popsize * n_layers
    defaults = OmegaConf.to_container(OmegaConf.load(ROOT / "conf" / "method" / "bbtv2.yaml"))["method"]
    outcome = {}
    for cached in (False, True):
        method = {**defaults, "loss": "ce", "n_prompt_tokens": prompt_len, "prompt_mode": "insert", "budget": budget,
                  "eval_every": budget, "checkpoint_every": 10**6, "generations_per_layer": 1, "prefix_cache": cached}
        with tempfile.TemporaryDirectory() as tmp:
            ctx = BlackBoxContext(
                task=task, train=train, dev=dev, method=method,
                optimizer={"name": "cma", "popsize": popsize}, seed=42, tracker=bench_dfo._NullTracker(),
                checkpoint=Checkpoint(Path(tmp)),
                evaluation=Evaluation(dev=lambda scorer: score_split(scorer, dev, task.metric, 64), metric="accuracy"),
                blackbox=BlackBoxAPI(backbone, train, budget=budget),
            )
            sync(backbone.device)
            start = time.perf_counter()
            solution = BBTv2().fit(ctx)
            sync(backbone.device)
            outcome[cached] = (time.perf_counter() - start, solution.prompt.detach().cpu())
    return {"available": True, "generations": n_layers,
            "uncached_s": outcome[False][0] / n_layers, "cached_s": outcome[True][0] / n_layers,
            "same_prompt": bool(torch.equal(outcome[False][1], outcome[True][1]))}


def gradient_steps(backbone, train, prompt_len: int, batch_size: int, steps: int, repeats: int) -> dict:
    """ms per training step, ours vs peft, for prompt tuning and P-tuning v2 (bench_gradient's steps, interleaved),
    peft wrapping its own copy of the same weights. P-tuning v2 last: it switches our model's attention function."""
    import copy

    import bench_gradient

    batch = bench_gradient.mini_batch(train, batch_size)
    out = {}
    for method in bench_gradient.METHODS:
        wrapped = bench_gradient.wrap_peft(method, copy.deepcopy(backbone.model), prompt_len)
        our_step, our_params = bench_gradient.ours(method, backbone, batch, prompt_len)
        peft_step, peft_params = bench_gradient.peft_side(method, wrapped, batch, batch.verbalizer.ids, prompt_len)
        assert our_params == peft_params, f"{method}: ours trains {our_params} parameters, peft {peft_params}"
        speed = bench_gradient.interleaved({"ours": our_step, "peft": peft_step}, backbone.device, steps, repeats, 1)
        out[method] = {"ours_ms": 1000 * speed["ours"], "peft_ms": 1000 * speed["peft"], "params": our_params}
        del wrapped, our_step, peft_step
    return out


def pool_claim(device: str):
    """Claim a GPU from a fresh pool the way every job does (prompt_bench.gpu_pool.job_gpu), before CUDA starts
    here. Returns (context manager to keep open for the whole run, facts)."""
    import contextlib

    found = gpu_pool.gpu_ids(os.environ.get(gpu_pool.GPUS_ENV, "auto"))
    if device == "cpu":
        note = (f"not asked (--device cpu); GPUs found: {', '.join(found)}" if found
                else "no GPU found (nvidia-smi lists none, CUDA_VISIBLE_DEVICES names none): the pool would run jobs on the CPU")
        return contextlib.nullcontext(None), {"found": found, "claimed": None, "note": note}
    directory = tempfile.mkdtemp(prefix="gpu_check_pool_")
    os.environ[gpu_pool.POOL_ENV] = directory
    return gpu_pool.job_gpu(device), {"found": found, "pool_dir": directory}


def describe_claim(claimed, facts: dict) -> str:
    import torch

    if "note" in facts:
        return facts["note"]
    if claimed is None:
        return (f"no GPU claimed (GPUs found: {', '.join(facts['found']) or 'none'}): jobs would run on the CPU")
    held = gpu_pool.GpuPool(facts["pool_dir"], facts["found"] or [claimed]).busy()
    name = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "CUDA not available"
    return (f"claimed GPU {claimed} of {', '.join(facts['found'])}; CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES')} "
            f"-> cuda:0 is {name}; lock held: {'yes' if claimed in held else 'NO'}")


def fmt_s(seconds: float | None) -> str:
    if seconds is None:
        return "n/a"
    return f"{seconds * 1000:.1f} ms" if seconds < 1 else f"{seconds:.2f} s"


def fmt_mb(mb: float | None) -> str:
    return "n/a" if mb is None else f"{mb:.0f} MB"


def table(results: dict) -> str:
    """The one markdown table."""
    pop, ref = results["popsize"], f"reference: ~{REFERENCE_MIN:.0f} min on an RTX 3090"
    lines = ["| check | model | fp32 | bf16 | note |", "|---|---|---|---|---|"]
    for model, r in results["models"].items():
        fp, bf = r["fp32"], r.get("bf16")

        def cell(part, key, fmt):
            return "n/a" if part is None else fmt(part[key])

        def ratio(key):
            return "" if bf is None else f"bf16/fp32 {bf[key] / fp[key]:.2f}"

        generations = BUDGET // pop
        lines.append(f"| BBT generation, population-batched ({pop} x {results['n_train']} examples, "
                     f"{results['prompt_len']} prompt tokens) | {model} | {cell(fp, 'batched_s', fmt_s)} | "
                     f"{cell(bf, 'batched_s', fmt_s)} | {ratio('batched_s')} |")
        lines.append(f"| BBT generation, one candidate at a time | {model} | {cell(fp, 'one_at_a_time_s', fmt_s)} | "
                     f"{cell(bf, 'one_at_a_time_s', fmt_s)} | batching speedup fp32 {fp['speedup']:.2f}x"
                     + ("" if bf is None else f", bf16 {bf['speedup']:.2f}x") + " |")
        lines.append(f"| peak memory, one batched generation | {model} | {cell(fp, 'peak_mb', fmt_mb)} | "
                     f"{cell(bf, 'peak_mb', fmt_mb)} | above the loaded model |")
        minutes = lambda part, key: "n/a" if part is None else f"{part[key] * generations / 60:.1f} min"  # noqa: E731
        lines.append(f"| {BUDGET:,} BBT API calls, extrapolated ({generations} batched generations) | {model} | "
                     f"{minutes(fp, 'batched_s')} | {minutes(bf, 'batched_s')} | {ref}; one at a time: fp32 "
                     f"{minutes(fp, 'one_at_a_time_s')}" + ("" if bf is None else f", bf16 {minutes(bf, 'one_at_a_time_s')}") + " |")
        cache_cells = []
        for part in (fp, bf):
            c = None if part is None else part["bbtv2"]
            cache_cells.append("n/a" if c is None else (f"{fmt_s(c['uncached_s'])} / {fmt_s(c['cached_s'])}"
                                                         if c["available"] else "not available"))
        c = fp["bbtv2"]
        note = (c["note"] if not c["available"] else
                f"without / with the cache, per generation over {c['generations']} (one per layer); cached/uncached "
                f"fp32 {c['cached_s'] / c['uncached_s']:.2f}" + ("" if bf is None else
                                                                 f", bf16 {bf['bbtv2']['cached_s'] / bf['bbtv2']['uncached_s']:.2f}")
                + f"; same prompt: {'yes' if c['same_prompt'] else 'NO'}")
        lines.append(f"| BBTv2 generation without / with prefix cache | {model} | {cache_cells[0]} | {cache_cells[1]} | {note} |")
        for method, label in (("prompt_tuning", "prompt tuning step: ours / peft PromptTuning"),
                              ("p_tuning_v2", "P-tuning v2 step: ours / peft PrefixTuning")):
            g = r.get("gradient", {}).get(method)
            if g is None:
                continue
            lines.append(f"| {label} (batch {results['batch_size']}, {results['virtual_tokens']} virtual tokens) | {model} | "
                         f"{g['ours_ms']:.1f} / {g['peft_ms']:.1f} ms | n/a | ours/peft {g['ours_ms'] / g['peft_ms']:.2f} "
                         f"(fp32; peft on its own copy of the same weights) |")
    lines.append(f"| GPU pool claims a device | - | - | - | {results['pool']} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="auto", help="auto (a GPU if there is one), cuda or cpu")
    parser.add_argument("--small", action="store_true", help="tiny models of the same two shapes, fewer sizes")
    parser.add_argument("--popsize", type=int, default=None, help="default 20 (--small: 8)")
    parser.add_argument("--n-train", type=int, default=None, help="train examples; default 32 (--small: 8)")
    parser.add_argument("--prompt-len", type=int, default=None, help="default 50 (--small: 10)")
    parser.add_argument("--repeats", type=int, default=None, help="timed repeats (median); default 3 (--small: 1)")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    parser.add_argument("--out", type=Path, default=ROOT / "outputs" / "bench" / "gpu_check.json")
    args = parser.parse_args(argv)
    small = args.small
    popsize = args.popsize or (8 if small else 20)
    n_train = args.n_train or (8 if small else 32)
    prompt_len = args.prompt_len or (10 if small else 50)
    repeats = args.repeats or (1 if small else 3)
    batch_size, virtual_tokens, steps = (4, 5, 2) if small else (16, 20, 5)
    if args.device not in ("auto", "cuda", "cpu") and not args.device.startswith("cuda:"):
        parser.error("--device: auto, cuda, cuda:N or cpu")

    claim, facts = pool_claim("cpu" if args.device == "cpu" else args.device)
    with claim as claimed:
        import torch  # noqa: E402  (only now: the pool chose this process's GPU first)

        if args.threads:
            torch.set_num_threads(args.threads)
        from transformers import AutoTokenizer

        import bench_dfo
        from prompt_bench.batching import encode_split
        from prompt_bench.models.loading import pick_device, pick_dtype

        device = pick_device("cuda" if args.device.startswith("cuda") and claimed is not None else args.device)
        bf16_runs = pick_dtype(device, "auto") == torch.bfloat16  # what compute.bf16=auto would choose here
        tokenizer = AutoTokenizer.from_pretrained(bench_dfo.ModelSpec.from_config(bench_dfo.MINILM).location)
        task = bench_dfo.sst2()
        examples = synthetic_examples(tokenizer, 2 * n_train, seed=0)
        results = {"device": str(device), "popsize": popsize, "n_train": n_train, "prompt_len": prompt_len,
                   "repeats": repeats, "batch_size": batch_size, "virtual_tokens": virtual_tokens, "small": small,
                   "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
                   "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
                   "bf16": "measured" if bf16_runs else "not measured: compute.bf16=auto would run fp32 here",
                   "pool": describe_claim(claimed, facts), "models": {}}
        start_all = time.perf_counter()
        for name, shape in (SMALL if small else FULL).items():
            started = time.perf_counter()
            backbone = build_backbone(name, shape, tokenizer, device)
            train = encode_split(examples[:n_train], task, backbone, prompt_len)
            dev = encode_split(examples[n_train:], task, backbone, prompt_len)
            row = {}
            for precision in ("fp32", "bf16"):
                if precision == "bf16":
                    if not bf16_runs:
                        break
                    backbone.model.to(torch.bfloat16)
                speed = bench_dfo.batched_vs_sequential(backbone, train, popsize, prompt_len, repeats)
                row[precision] = {**speed, "peak_mb": peak_generation_mb(backbone, train, popsize, prompt_len),
                                  "bbtv2": bbtv2_prefix_cache(backbone, task, train, dev, popsize, prompt_len)}
                print(f"  {name} {precision}: batched {fmt_s(speed['batched_s'])}, one at a time "
                      f"{fmt_s(speed['one_at_a_time_s'])}", file=sys.stderr, flush=True)
            backbone.model.to(torch.float32)
            if shape["family"] == "masked_lm":  # peft's side (bench_gradient) reads a masked LM's MLM logits
                row["gradient"] = gradient_steps(backbone, train, virtual_tokens, batch_size, steps, repeats)
            row["seconds"] = time.perf_counter() - started
            results["models"][name] = row
            del backbone
            if device.type == "cuda":
                torch.cuda.empty_cache()
        results["total_s"] = time.perf_counter() - start_all

    text = table(results)
    where = results["gpu"] or f"{platform.machine()} CPU, {results['torch_threads']} torch threads"
    print(f"{'small shapes' if small else 'large shapes'}, random weights; {where}; torch {results['torch']}; "
          f"bf16 {results['bf16']}; medians of {repeats}; {results['total_s']:.0f} s in all\n")
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({**results, "table": text}, indent=2, default=str))
    return results


if __name__ == "__main__":
    main()
