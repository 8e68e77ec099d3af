"""Benchmark of the gradient prompt methods against peft (not a test): run `python scripts/bench_gradient.py`.

In one process, on the same model weights, the same SST-2 16-shot mini-batch and the same number of virtual
tokens, the time of one training step of
  - our `prompt_tuning` (a shallow soft prompt through `backbone.label_logits`) vs peft's PromptTuningConfig;
  - our `p_tuning_v2` (per-layer key/value prefixes through our registered attention function,
    `prefix_scorer` with the verbalizer, no projection) vs peft's PrefixTuningConfig (no projection).
A step is: forward on the mini-batch, cross-entropy on the class logits (the verbalizer's label-word logits
at the mask position), backward, AdamW step, zero_grad. Ours runs exactly the methods' code paths; peft runs
its wrapped model's forward on input_ids + attention_mask and reads the MLM logits at the (shifted) mask
position at the label-word ids, which is what a peft user gets. The sides are timed interleaved
(ours, peft, ours, peft, ...) so machine noise hits both alike; medians over --repeats.
A third, diagnostic side ("peft, head at mask") runs peft's same forward with the MLM head removed and applied
to the mask position only, as our masked-LM backbone does: it separates the prompt/prefix mechanism's cost
from the full-vocabulary projection over every position that peft's plain forward pays for.
Peak memory: each (side, method, model) in a fresh spawned child, a few training steps after the model is
loaded (resident-memory high-water mark above the loaded model via VmHWM reset on CPU, as in
scripts/bench_dfo.py; torch.cuda.max_memory_allocated on CUDA).
Models: the tiny random BERT of bench_dfo, and a random BertForMaskedLM with MiniLM's sizes (384 hidden,
6 layers, 12 heads, 1536 intermediate, MiniLM's WordPiece vocabulary).
Prints a markdown table and writes JSON (default outputs/bench/bench_gradient.json). Ratios only mean
something within one run: the machine is shared and noisy.
"""

from __future__ import annotations

import argparse
import gc
import json
import multiprocessing as mp
import os
import platform
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_dfo  # noqa: E402  (also puts the repo root on sys.path)
from bench_dfo import ROOT, random_bert, setup, tiny_bert  # noqa: E402

from prompt_bench.methods.p_tuning_v2 import prefix_scorer  # noqa: E402
from prompt_bench.methods.training import _batch_order  # noqa: E402
from prompt_bench.models.prefixes import enable_prefixes  # noqa: E402
from prompt_bench.optim import torch_optim  # noqa: E402
from prompt_bench.prompts.prefix import PrefixEncoder  # noqa: E402
from prompt_bench.prompts.soft import initial_prompt  # noqa: E402

# Quiet output, here and in the spawned children (which import this module): no weight-loading bars, and
# not the deprecation warning transformers raises when peft checks for gradient checkpointing.
warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
try:
    from transformers.utils import logging as _hf_logging

    _hf_logging.disable_progress_bar()
except ImportError:
    pass

METHODS = ("prompt_tuning", "p_tuning_v2")
SEED = 42
LR = 0.01  # both methods' default learning rate


def minilm_sized_bert(folder: Path) -> dict:
    """A random BertForMaskedLM with MiniLM-L6's sizes and tokenizer (peft can wrap a masked LM directly)."""
    return random_bert(folder, "bert-minilm-size", hidden=384, layers=6, heads=12, max_positions=512)


def mini_batch(train, batch_size: int):
    """The batch prompt tuning's training loop draws at step 0 (examples repeat if the split is smaller)."""
    n = len(train)
    if batch_size <= n:
        return train.batch(_batch_order(n, batch_size, SEED, 0))
    return train.batch([i % n for i in range(batch_size)])


def _step_fn(scorer, params, labels):
    optimizer = torch_optim.build({"name": "adamw"}, params, lr=LR, weight_decay=0.0)

    def step() -> None:
        loss = F.cross_entropy(scorer().float(), labels)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step


def ours(method: str, backbone, batch, prompt_len: int):
    """(step, trainable parameter count) on our code paths, as PromptTuning.fit / PTuningV2.fit build them."""
    if method == "prompt_tuning":
        init = initial_prompt("vocab", prompt_len, backbone.word_embeddings.weight, SEED)
        prompt = init.to(device=backbone.device, dtype=torch.float32).requires_grad_(True)
        return _step_fn(lambda: backbone.label_logits(batch, prompt.unsqueeze(0))[0], [prompt], batch.labels), prompt.numel()
    torch.manual_seed(SEED)
    shape = enable_prefixes(backbone)
    encoder = PrefixEncoder(shape, prompt_len, backbone.hidden_size, False, 512, SEED).to(backbone.device)
    score = prefix_scorer(backbone, encoder, None)  # head=None: the verbalizer, as peft's side reads
    params = list(encoder.parameters())
    return _step_fn(lambda: score(batch), params, batch.labels), sum(p.numel() for p in params)


def load_peft(method: str, path: str, device: torch.device, prompt_len: int):
    """The same weights, wrapped by peft: eval mode (no dropout, as ours), base model frozen."""
    from transformers import AutoModelForMaskedLM

    model = AutoModelForMaskedLM.from_pretrained(path, dtype=torch.float32).to(device)
    return wrap_peft(method, model, prompt_len)


def wrap_peft(method: str, model, prompt_len: int):
    """A masked LM (changed in place: eval mode, base frozen) wrapped by peft for `method`."""
    from peft import PrefixTuningConfig, PromptTuningConfig, get_peft_model

    model.eval()
    model.requires_grad_(False)
    # FEATURE_EXTRACTION: peft's task-agnostic wrapper; its forward prepends the prompt (prompt tuning) or
    # passes the prefix as past_key_values (prefix tuning) and returns the wrapped model's output, here the
    # MLM logits. (A plain PeftModel's forward ignores prompt-learning adapters.)
    if method == "prompt_tuning":
        config = PromptTuningConfig(task_type="FEATURE_EXTRACTION", num_virtual_tokens=prompt_len)
    else:
        config = PrefixTuningConfig(task_type="FEATURE_EXTRACTION", num_virtual_tokens=prompt_len, prefix_projection=False)
    torch.manual_seed(SEED)
    wrapped = get_peft_model(model, config)
    wrapped.eval()
    return wrapped


def peft_side(method: str, wrapped, batch, label_ids, prompt_len: int, head_at_mask: bool = False):
    """(step, trainable parameter count): peft's forward, MLM logits at the mask, at the label-word ids.

    head_at_mask (diagnostic; changes `wrapped`): the MLM head is swapped for an identity, so the forward
    returns hidden states, and the head runs on the mask position only, as in our masked-LM backbone.
    """
    # Prompt tuning prepends the virtual tokens, so the mask moves right by prompt_len; a prefix lives in the
    # cache and leaves the input's positions alone (BERT does shift its position ids by the cache length).
    target = batch.target_pos + (prompt_len if method == "prompt_tuning" else 0)
    rows = torch.arange(len(batch), device=target.device)
    head = None
    if head_at_mask:
        model = wrapped.get_base_model()
        name = next(n for n in ("lm_head", "cls", "generator_lm_head") if hasattr(model, n))
        head = getattr(model, name)
        setattr(model, name, torch.nn.Identity())

    def scorer():
        out = wrapped(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits  # [B, L?+T, V or d]
        if head is not None:
            return head(out[rows, target].unsqueeze(1))[:, 0, label_ids]
        return out[rows, target][:, label_ids]

    params = [p for p in wrapped.parameters() if p.requires_grad]
    return _step_fn(scorer, params, batch.labels), wrapped.get_nb_trainable_parameters()[0]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def interleaved(steps: dict, device: torch.device, n_steps: int, repeats: int, warmup: int) -> dict:
    """Median seconds per step of each side, timed A, B, A, B ... in the same process."""
    for step in steps.values():
        for _ in range(warmup):
            step()
    _sync(device)
    times = {name: [] for name in steps}
    for _ in range(repeats):
        for name, step in steps.items():
            start = time.perf_counter()
            for _ in range(n_steps):
                step()
            _sync(device)
            times[name].append((time.perf_counter() - start) / n_steps)
    return {name: statistics.median(t) for name, t in times.items()}


def _memory_child(side: str, method: str, model_cfg: dict, device: str, batch_size: int, prompt_len: int,
                  n_steps: int, threads: int, queue) -> None:
    if threads:
        torch.set_num_threads(threads)
    _, backbone, train, _ = setup(model_cfg, device, 16, SEED, prompt_len)
    batch = mini_batch(train, batch_size)
    where = backbone.device
    if side == "ours":
        if method == "p_tuning_v2":
            enable_prefixes(backbone)  # its probe forward is setup, like loading
    else:
        label_ids = batch.verbalizer.ids
        del backbone
        gc.collect()
        wrapped = load_peft(method, model_cfg["path"], where, prompt_len)
    cuda = where.type == "cuda"
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    else:
        base = bench_dfo._reset_rss_peak()
    step, _ = ours(method, backbone, batch, prompt_len) if side == "ours" else peft_side(method, wrapped, batch, label_ids, prompt_len)
    for _ in range(n_steps):
        step()
    if cuda:
        torch.cuda.synchronize()
        peak = (torch.cuda.max_memory_allocated() - base) / 2**20
    else:
        peak = (bench_dfo._proc_status_kb("VmHWM") - base) / 1024
    queue.put(peak)


def peak_memory(side: str, method: str, model_cfg: dict, device: str, batch_size: int, prompt_len: int, n_steps: int,
                threads: int) -> float:
    context = mp.get_context("spawn")
    queue = context.Queue()
    child = context.Process(target=_memory_child,
                            args=(side, method, model_cfg, device, batch_size, prompt_len, n_steps, threads, queue))
    child.start()
    peak = float(queue.get())  # before join: a child blocked on a full queue pipe would never exit
    child.join()
    if child.exitcode != 0:
        raise RuntimeError(f"memory child ({side}, {method}, {model_cfg['name']}) exited with {child.exitcode}")
    return peak


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--prompt-len", type=int, default=20)
    parser.add_argument("--steps", type=int, default=10, help="timed steps per side per repeat")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--memory-steps", type=int, default=3, help="training steps per peak-memory child")
    parser.add_argument("--threads", type=int, default=0,
                        help="torch CPU threads, here and in the memory children (0: torch's default); on a CPU "
                             "shared with other jobs, 1 avoids oversubscribed thread pools and gives steadier ratios")
    parser.add_argument("--out", type=Path, default=ROOT / "outputs" / "bench" / "bench_gradient.json")
    args = parser.parse_args()

    import peft
    import transformers

    if args.threads:
        torch.set_num_threads(args.threads)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for model_cfg in (tiny_bert(Path(tmp) / "tiny-bert"), minilm_sized_bert(Path(tmp) / "bert-minilm-size")):
            _, backbone, train, _ = setup(model_cfg, args.device, 16, SEED, args.prompt_len)
            batch = mini_batch(train, args.batch_size)
            for method in METHODS:
                wrapped = load_peft(method, model_cfg["path"], backbone.device, args.prompt_len)
                diagnostic = load_peft(method, model_cfg["path"], backbone.device, args.prompt_len)
                our_step, our_params = ours(method, backbone, batch, args.prompt_len)
                peft_step, peft_params = peft_side(method, wrapped, batch, batch.verbalizer.ids, args.prompt_len)
                masked_step, _ = peft_side(method, diagnostic, batch, batch.verbalizer.ids, args.prompt_len, head_at_mask=True)
                # Like for like: the same trainable tensors on both sides. Prompt tuning: one [L, d] table.
                # Prefix tuning without projection: peft's PrefixEncoder is one Embedding(L, n_layers * 2 * d)
                # and ours one [L, n_layers * 2 * kv_dim] table, kv_dim = d for BERT, so the counts agree.
                assert our_params == peft_params, (
                    f"{model_cfg['name']} {method}: ours trains {our_params} parameters, peft {peft_params}: "
                    "the two sides do not compare like for like")
                speed = interleaved({"ours": our_step, "peft": peft_step, "peft_head_at_mask": masked_step},
                                    backbone.device, args.steps, args.repeats, args.warmup)
                del wrapped, diagnostic, our_step, peft_step, masked_step
                gc.collect()
                memory = {side: peak_memory(side, method, model_cfg, args.device, args.batch_size, args.prompt_len,
                                            args.memory_steps, args.threads) for side in ("ours", "peft")}
                rows.append({"model": model_cfg["name"], "method": method, "device": str(backbone.device),
                             "trainable_params": our_params, "ours_ms": 1000 * speed["ours"],
                             "peft_ms": 1000 * speed["peft"], "ratio": speed["ours"] / speed["peft"],
                             "peft_head_at_mask_ms": 1000 * speed["peft_head_at_mask"],
                             "ratio_vs_head_at_mask": speed["ours"] / speed["peft_head_at_mask"],
                             "ours_peak_mb": memory["ours"], "peft_peak_mb": memory["peft"]})
                print(f"  {model_cfg['name']} {method}: ours {rows[-1]['ours_ms']:.1f} ms, peft {rows[-1]['peft_ms']:.1f} ms",
                      flush=True)
            del backbone
            gc.collect()

    lines = ["| model | method | ours ms/step | peft ms/step | ours/peft | ours peak MB | peft peak MB | "
             "peft, head at mask: ms/step | ours/that |",
             "|" + "---|" * 9]
    for r in rows:
        peft_name = "PromptTuning" if r["method"] == "prompt_tuning" else "PrefixTuning"
        lines.append(f"| {r['model']} | {r['method']} vs {peft_name} | {r['ours_ms']:.1f} | {r['peft_ms']:.1f} | "
                     f"{r['ratio']:.2f} | {r['ours_peak_mb']:.0f} | {r['peft_peak_mb']:.0f} | "
                     f"{r['peft_head_at_mask_ms']:.1f} | {r['ratio_vs_head_at_mask']:.2f} |")
    table = "\n".join(lines)
    device = rows[0]["device"]
    print(f"\nSST-2 16-shot, batch {args.batch_size}, {args.prompt_len} virtual tokens, {args.steps} steps x "
          f"{args.repeats} repeats (median); {device}, {torch.get_num_threads()} torch threads; torch {torch.__version__}, peft {peft.__version__}, "
          f"transformers {transformers.__version__}, {os.cpu_count()} CPUs, {platform.machine()}\n")
    print(table)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({
        "args": {k: str(v) for k, v in vars(args).items()}, "rows": rows, "device": device,
        "torch": torch.__version__, "peft": peft.__version__, "transformers": transformers.__version__,
        "cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(), "machine": platform.machine(),
    }, indent=2))
    print(f"\nwritten to {args.out}")


if __name__ == "__main__":
    main()
