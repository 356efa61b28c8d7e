"""The one exception type for bad input files: it names the file and the problem."""

from __future__ import annotations

import os


class InputError(ValueError):
    """Bad or unsupported input. `str(err)` is "PATH: problem" (just "problem" when path is None)."""

    def __init__(self, path: str | os.PathLike | None, problem: str):
        self.path = str(path) if path is not None else ""
        self.problem = str(problem)
        super().__init__(f"{self.path}: {self.problem}" if self.path else self.problem)

    def __reduce__(self):  # keeps the two-argument form picklable
        return (type(self), (self.path or None, self.problem))
