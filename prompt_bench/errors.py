"""User-facing errors: the CLI prints these as one line, never as a traceback."""


class PromptBenchError(Exception):
    """Bad input or an impossible request. The message names the problem and the fix."""


class ConfigError(PromptBenchError):
    pass


class DataError(PromptBenchError):
    pass


class ModelError(PromptBenchError):
    pass


class ArtifactError(PromptBenchError):
    """A prompt, checkpoint or metadata file that exists but cannot be read (truncated, foreign, not UTF-8)."""


class BudgetExhausted(PromptBenchError):
    """A black-box method asked for more API calls than its budget allows."""


class RunBusy(PromptBenchError):
    """Another process is running the same run folder (same config hash) right now."""
