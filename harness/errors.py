"""One root exception for the harness, with the notebook, cell and parameter involved."""

from __future__ import annotations


class RunbookError(Exception):
    def __init__(self, message: str, *, notebook: str | None = None, cell: int | None = None,
                 parameter: str | None = None) -> None:
        super().__init__(message)
        self.notebook, self.cell, self.parameter = notebook, cell, parameter


class ParameterError(RunbookError, ValueError):
    """A ``-p NAME=VALUE`` that no runbook declares, or whose value does not fit the declared type."""


class SequenceError(RunbookError):
    """A sequence file that cannot be read, or names a notebook by a path or one that does not exist."""


class ChecksFailed(RunbookError):
    """Raised by a runbook's gate cell when one of its checks failed (after results are saved)."""

    def __init__(self, failed: list[str], notebook: str | None = None) -> None:
        super().__init__(f"{len(failed)} check(s) failed: {', '.join(failed)}", notebook=notebook)
        self.failed = failed
