"""Prompt pre-training for MetaPT and PPT: a text corpus, pseudo-labels, auxiliary tasks, meta-learning."""
