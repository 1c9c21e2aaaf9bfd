"""Stage failures that are not a row's fault, in a module of their own so the CLI and the Ray actor wrapper
catch them without importing the stages (and torch)."""


class StageSetupError(RuntimeError):
    """A stage could not load its models: an infrastructure failure (exit 1), not a row's fault."""


class DeviceLost(RuntimeError):
    """The accelerator failed in a way its process cannot recover from (an illegal memory access, a device-side
    assert, an uncorrectable ECC error): every later row in this process would fail the same way. A Ray actor
    exits on it, so Ray starts a fresh one and retries the rows (counted as a death of their worker); in
    process (``Renderer``) it is raised to the caller."""
