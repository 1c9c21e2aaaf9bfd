"""The stage failure the CLI tells apart (exit 1), in a module of its own so the CLI catches it without
importing the stages (and torch)."""


class StageSetupError(RuntimeError):
    """A stage could not load its models: an infrastructure failure (exit 1), not a row's fault."""
