"""Errors that name the offending input file and what is wrong with it."""

from __future__ import annotations

from pathlib import Path


class InputError(Exception):
    """A dataset file is missing, malformed or inconsistent; the message names file and problem."""

    def __init__(self, path: str | Path, problem: str) -> None:
        self.path = Path(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")
