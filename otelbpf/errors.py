"""Errors the agent reports to its user: what went wrong and how to fix it, never a traceback."""

from __future__ import annotations


class SetupError(Exception):
    """The agent cannot start here. The CLI prints message and fix and exits non-zero."""

    def __init__(self, message: str, fix: str, exit_code: int = 2) -> None:
        super().__init__(message)
        self.message = message
        self.fix = fix
        self.exit_code = exit_code

    def __str__(self) -> str:
        return f"{self.message}\n  how to fix: {self.fix}"
