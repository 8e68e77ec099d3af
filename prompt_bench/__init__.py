"""prompt-bench: a config-driven experiment CLI for prompt learning on frozen language models."""

__version__ = "0.1.0"
