"""User-facing errors: one line, naming the file or parameter and what was wrong."""


class PstError(Exception):
    """An error caused by the user's input or environment, shown as one line (exit code 2)."""

    exit_code = 2

    def __init__(self, message: str):
        # Keep it one line whatever the cause said.
        super().__init__(" ".join(str(message).split()))


class ConfigError(PstError):
    """A bad parameter name or value."""


class InputError(PstError):
    """A bad input file (missing, unreadable, not an image, ...)."""


class StoreError(PstError):
    """The artifact store cannot be reached or holds something unreadable."""


class ComputeError(PstError):
    """A stage's computation failed in a way the user can act on (e.g. a non-finite loss)."""


class MemoryBudgetError(PstError):
    """A run that would not fit its memory budget, refused before it starts."""


def describe_error(exc: BaseException) -> str:
    """One line for a run's record or a dataset row: the message of our own errors, the type of others."""
    return str(exc) if isinstance(exc, PstError) else " ".join(f"{type(exc).__name__}: {exc}".split())
