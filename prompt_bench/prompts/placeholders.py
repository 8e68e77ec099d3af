"""BBT's additive prompt: L placeholder words in the input, the soft prompt added onto their embeddings.

txsun1997/Black-Box-Tuning (`--cat_or_add add`, its default; bbt.py:63) writes the input as
`<the words of vocabulary ids 1000..1000+L-1> . <templated text>` (dataloaders/dataloader.py:39-44) and adds
A z to the embedding layer's output at those L positions (models/modeling_roberta.py:712-724), so z = 0 is a
hard prompt of real words. The placeholder ids are each model's own vocabulary ids; we put the ids in the
sequence directly (the reference decodes them to text and re-tokenizes, which only matches where that round
trip is exact).
"""

from __future__ import annotations

from dataclasses import dataclass

from prompt_bench.errors import ConfigError

#: method.prompt_mode values: add (BBT's default: A z added onto placeholder words) or insert (A z inserted as
#: L extra input embeddings, z = 0 a zero vector)
PROMPT_MODES = ("add", "insert")


@dataclass(frozen=True)
class Placeholders:
    length: int
    first_id: int = 1000
    #: text between the placeholder words and the templated input (the reference's " . ")
    separator: str = " ."

    @classmethod
    def from_method(cls, cfg: dict) -> "Placeholders | None":
        """The method's placeholders, or None where its prompt is inserted (method.prompt_mode=insert)."""
        mode = str(cfg.get("prompt_mode", "insert"))
        if mode not in PROMPT_MODES:
            raise ConfigError(f"method.prompt_mode={mode} is unknown: use one of {', '.join(PROMPT_MODES)}")
        if mode == "insert":
            return None
        first = int(cfg.get("placeholder_start", 1000))
        if first < 0:
            raise ConfigError(f"method.placeholder_start must be a vocabulary id >= 0, got {first}")
        return cls(int(cfg["n_prompt_tokens"]), first, str(cfg.get("placeholder_separator", " .")))

    def ids(self, tokenizer, model_name: str) -> list[int]:
        ids = list(range(self.first_id, self.first_id + self.length))
        if ids[-1] >= len(tokenizer):
            raise ConfigError(f"placeholder words {ids[0]}..{ids[-1]} are outside {model_name}'s vocabulary of "
                              f"{len(tokenizer)}: lower method.placeholder_start")
        special = sorted(set(ids) & set(tokenizer.all_special_ids))
        if special:  # a placeholder [MASK] or [SEP] would change what the model reads, not just the prompt
            raise ConfigError(f"placeholder words {ids[0]}..{ids[-1]} include {model_name}'s special tokens "
                              f"{tokenizer.convert_ids_to_tokens(special)}: move method.placeholder_start")
        return ids

    def text_after(self, rendered: str) -> str:
        """What follows the placeholder words: the separator, then the templated input after a space."""
        return f"{self.separator} {rendered}" if self.separator else f" {rendered}"
