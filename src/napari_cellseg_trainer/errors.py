"""The base of the exceptions that mean "the user's input is wrong".

Such an error is shown as its message alone: one line and exit code 2 on the command line, a
notification in napari; any other exception is a bug and keeps its type name and traceback. Each
module defines its own error (``ConfigError``, ``CheckpointError``, ``DataError``, ...) as a
subclass, so catching ``UserInputError`` imports none of them (nor torch).
"""

from __future__ import annotations


class UserInputError(Exception):
    """Bad input from the user: a config, a path, an image, a device this machine lacks."""
