"""Auxiliary tasks by unsupervised clustering: K-means over sentence embeddings, LDA over bags of words
(scikit-learn), as MetaPT builds them."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from prompt_bench import progress
from prompt_bench.batching import encode_split
from prompt_bench.errors import ConfigError
from prompt_bench.models.backbone import Backbone
from prompt_bench.tasks.spec import Example, TaskSpec

METHODS = ("kmeans", "lda", "none")


@torch.no_grad()
def sentence_embeddings(texts: list[str], embedder: Backbone, task: TaskSpec, batch_size: int = 64) -> np.ndarray:
    """[N, d] L2-normalised mean-pooled embeddings of the raw texts (no template, no prompt)."""
    split = encode_split([Example({"text": t}, 0) for t in texts], task, embedder, 0)
    out = []
    bar = progress.bar(len(texts), "embed the corpus for clustering", unit="texts")
    for start in range(0, len(texts), batch_size):
        pooled = embedder.pooled(split.batch(range(start, min(start + batch_size, len(texts)))))
        out.append(torch.nn.functional.normalize(pooled, dim=-1).cpu())
        bar.update(len(pooled))
    return torch.cat(out).numpy()


def cluster(texts: list[str], method: str, k: int, seed: int, embed=None) -> np.ndarray:
    """[N] cluster index of each text. `embed(texts) -> [N, d]` is needed for kmeans."""
    if method not in METHODS:
        raise ConfigError(f"method.pretrain.clustering={method} is not one of {', '.join(METHODS)}")
    if method == "none":
        return np.zeros(len(texts), dtype=int)
    if not 1 <= k <= len(texts):
        raise ConfigError(f"method.pretrain.k={k} clusters for {len(texts)} texts: choose 1 <= k <= {len(texts)}")
    if method == "kmeans":
        from sklearn.cluster import KMeans

        return KMeans(n_clusters=k, random_state=seed, n_init=10).fit_predict(embed(texts)).astype(int)
    from sklearn.decomposition import LatentDirichletAllocation
    from sklearn.feature_extraction.text import CountVectorizer

    counts = CountVectorizer(stop_words="english", min_df=2, max_features=5000).fit_transform(texts)
    topics = LatentDirichletAllocation(n_components=k, random_state=seed, learning_method="batch").fit_transform(counts)
    return topics.argmax(1).astype(int)


def write_summary(path: Path, texts: list[str], assignment: np.ndarray, labels: list[int], per_cluster: int = 5) -> dict:
    """clusters.json: size, pseudo-label histogram and a few example texts per cluster."""
    summary = {"n_texts": len(texts), "clusters": []}
    for c in sorted(set(assignment.tolist())):
        members = np.flatnonzero(assignment == c)
        summary["clusters"].append({
            "cluster": int(c), "size": int(len(members)),
            "pseudo_labels": np.bincount([labels[i] for i in members], minlength=max(labels) + 1).tolist(),
            "examples": [texts[i][:200] for i in members[:per_cluster]],
        })
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(summary, indent=1))
    return summary
