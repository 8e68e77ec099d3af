"""Manual prompt, zero-shot: the task's template and verbalizer on the frozen model, nothing learned."""

from prompt_bench.methods.base import Method, Solution, WhiteBoxContext


class Manual(Method):
    access = "none"

    def fit(self, ctx: WhiteBoxContext) -> Solution:
        return Solution(prompt=None, meta={"note": "zero-shot: template + verbalizer only"}, budget_used=0)


METHOD = Manual
