"""Corpus -> pseudo-labels -> auxiliary tasks -> meta-learned prompt, cached by configuration.

The pre-trained prompt depends only on the pre-training settings, the model and the prompt length, not on
the downstream task or seed, so it is computed once under `<cache>/metapt/<hash>/` (locked while it is being
computed, checkpointed so an interruption resumes) and every downstream run with the same settings reuses it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from pathlib import Path
from typing import Any, Mapping

import numpy as np
from filelock import FileLock

from prompt_bench.artifacts import load_tensors, save_tensors
from prompt_bench.batching import encode_split
from prompt_bench.checkpoint import Checkpoint
from prompt_bench.models.backbone import Backbone
from prompt_bench.pretraining import clustering, corpus, meta, pseudo_labels
from prompt_bench.prompts.soft import initial_prompt

log = logging.getLogger(__name__)


def cache_key(pretrain: Mapping[str, Any], model_id: str, n_tokens: int) -> str:
    content = json.dumps({"pretrain": pretrain, "model": model_id, "n_tokens": n_tokens}, sort_keys=True, default=str)
    return hashlib.sha1(content.encode()).hexdigest()[:12]


def pretrained_prompt(backbone: Backbone, pretrain: Mapping[str, Any], n_tokens: int, cache_dir: Path,
                      mirror_root: Path | None, eval_batch_size: int = 64) -> tuple[Path, dict[str, Any]]:
    """(prompt.safetensors path, facts) of the pre-trained prompt, computing it if no cached one exists."""
    model_id = f"{backbone.spec.name}:{backbone.spec.location}"
    folder = cache_dir / "metapt" / cache_key(dict(pretrain), model_id, n_tokens)
    done = folder / "prompt.safetensors"
    folder.mkdir(parents=True, exist_ok=True)
    with FileLock(str(folder) + ".lock"):
        if done.is_file():
            _, facts = load_tensors(done)
            return done, {**facts, "reused": True}
        started = time.perf_counter()
        facts = _pretrain(backbone, pretrain, n_tokens, folder, mirror_root, eval_batch_size)
        facts["pretrain_wall_time_s"] = round(time.perf_counter() - started, 2)
        save_tensors(folder / "prompt", {"prompt": facts.pop("prompt")}, facts)
    return done, {**facts, "reused": False}


def _pretrain(backbone: Backbone, cfg: Mapping[str, Any], n_tokens: int, folder: Path, mirror_root: Path | None,
              eval_batch_size: int) -> dict[str, Any]:
    seed = int(cfg["seed"])
    texts = corpus.load_corpus(cfg["corpus"], mirror_root, seed)
    task = pseudo_labels.sentence_task()  # its splits carry its own label words, the downstream task's are untouched
    examples = pseudo_labels.pseudo_label(texts, backbone, task, cfg.get("teacher_prompt"), eval_batch_size)
    labels = [e.label for e in examples]
    embed = None
    if cfg["clustering"] == "kmeans":
        embedder = backbone if backbone.family == "sentence_encoder" else _packaged_minilm(backbone.device)
        embed = lambda xs: clustering.sentence_embeddings(xs, embedder, task)  # noqa: E731
    log.info("pre-training: clustering %d texts into %s groups (%s)", len(texts), cfg["k"], cfg["clustering"])
    assignment = clustering.cluster(texts, str(cfg["clustering"]), int(cfg["k"]), seed, embed)
    summary = clustering.write_summary(folder / "clusters.json", texts, assignment, labels)
    log.info("pre-training corpus: %d texts in %d auxiliary tasks", len(texts), len(summary["clusters"]))
    split = encode_split(examples, task, backbone, n_tokens)
    tasks = meta.auxiliary_tasks(assignment, min_size=2)
    init = initial_prompt(str(cfg["init"]), n_tokens, backbone.word_embeddings.weight, seed)
    history: list[float] = []
    prompt = meta.meta_train(backbone, split, tasks, init, cfg, Checkpoint(folder),
                             on_step=lambda step, loss: history.append(round(loss, 5)))
    return {"prompt": prompt.cpu(), "n_texts": len(texts), "n_tasks": len(tasks),
            "cluster_sizes": [c["size"] for c in summary["clusters"]],
            "pseudo_label_counts": np.bincount(labels, minlength=len(task.verbalizer)).tolist(),
            "query_loss": history, "clusters_file": str(folder / "clusters.json"),
            "algorithm": str(cfg["algorithm"]), "clustering": str(cfg["clustering"])}


def _packaged_minilm(device) -> Backbone:
    from prompt_bench.conf_files import model_config
    from prompt_bench.models import ModelSpec, build_backbone

    return build_backbone(ModelSpec.from_config(model_config("minilm")), device=str(device))
