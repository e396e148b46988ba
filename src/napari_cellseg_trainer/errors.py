"""The base of the exceptions that mean "the user's input is wrong".

Such an error is shown as its message alone: one line and exit code 2 on the command line, a
notification in napari; any other exception is a bug and keeps its type name and traceback. Each
module defines its own error (``ConfigError``, ``CheckpointError``, ``DataError``, ...) as a
subclass, so catching ``UserInputError`` imports none of them (nor torch).
"""

from __future__ import annotations

from collections.abc import Sequence


class UserInputError(Exception):
    """Bad input from the user: a config, a path, an image, a device this machine lacks."""


class ProblemsError(UserInputError):
    """Bad input with several problems, all found in one pass and reported together, one a line."""

    what = "problem(s)"  # e.g. "problem(s) in the config"

    def __init__(self, problems: Sequence[object], source: str = "") -> None:
        self.problems = list(problems)
        self.source = source
        head = f"{source}: " if source else ""
        if len(self.problems) == 1:  # one problem, one line
            super().__init__(f"{head}{self.problems[0]}")
            return
        lines = [f"{head}{len(self.problems)} {self.what}:"]
        lines += [f"  - {p}" for p in self.problems]
        super().__init__("\n".join(lines))
