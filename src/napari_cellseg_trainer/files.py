"""Writing files so that nothing is ever half-written, and cleaning up after a killed writer.

Every file this project writes (configs, checkpoints, images, metrics) goes to a temporary file
in the same folder first, is flushed to disk, and only then takes its final name: a crash, a
full disk or a kill leaves either the old file or the new one, never a mix. The temporary file
is created like any other file (its mode follows the umask) and is named after the writing
process, so a later run can tell a dead writer's leftovers from a live one's work.
"""

from __future__ import annotations

import os
import re
import socket
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

from .errors import UserInputError

_TEMP = re.compile(r"^\..+\.(\d+)\.part$")


class FileWriteError(UserInputError, OSError):
    """A file could not be written (full disk, no permission); nothing was changed."""


class BusyError(UserInputError, RuntimeError):
    """Another run, alive on this machine, is writing the same result."""


def write_atomically(
    path: str | os.PathLike,
    content: bytes | Callable[[BinaryIO], None],
    *,
    overwrite: bool = True,
) -> Path:
    """Write ``content`` (bytes, or a function writing to a binary file) to ``path`` atomically.

    With ``overwrite=False`` an existing ``path`` is never replaced: FileExistsError (a
    FileWriteError) instead, checked at the very moment of the rename.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.part")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "wb") as fh:  # a named file (tifffile asks its name); mode per umask
            if isinstance(content, bytes | bytearray | memoryview):
                fh.write(content)
            else:
                content(fh)
            fh.flush()
            os.fsync(fh.fileno())
        if overwrite:
            os.replace(tmp, path)
        else:
            os.link(tmp, path)  # fails if path exists, unlike a rename
            tmp.unlink()
        fsync_folder(path.parent)
    except FileExistsError:
        tmp.unlink(missing_ok=True)
        raise FileWriteError(f"{path} already exists; it was left untouched") from None
    except BaseException as err:
        tmp.unlink(missing_ok=True)
        if isinstance(err, OSError):
            reason = err.strerror or str(err)
            raise FileWriteError(f"could not write {path} ({reason}); nothing was changed") from err
        raise
    return path


def fsync_folder(folder: Path) -> None:
    """Make a rename in ``folder`` durable (a no-op where folders cannot be opened)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def remove_dead_temporaries(folder: str | os.PathLike) -> list[Path]:
    """Delete the temporary files of writers that no longer run (e.g. killed during a save)."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    removed = []
    for path in folder.iterdir():
        match = _TEMP.match(path.name)
        if match and path.is_file() and not _alive(int(match.group(1))):
            path.unlink(missing_ok=True)
            removed.append(path)
    return removed


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's live process
    return True


@contextmanager
def writing(target: str | os.PathLike, role: str = "writer") -> Iterator[None]:
    """Mark ``target`` as written by this process while the block runs.

    The mark is a small file beside it, ``.<name>.<role>``, holding ``pid@host``; a second run
    that finds the mark of a live process on this machine is refused (BusyError) before it
    writes anything. A killed run's mark is taken over. Runs on other machines (a shared
    disk) cannot be asked whether they live: their marks are taken over too.
    """
    target = Path(target)
    marker = target.with_name(f".{target.name}.{role}")
    marker.parent.mkdir(parents=True, exist_ok=True)
    host = socket.gethostname()
    while True:
        try:
            fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            holder = marker.read_text(errors="replace").strip()
            pid, _, where = holder.partition("@")
            if not holder or (where == host and pid.isdigit() and _alive(int(pid))):
                raise BusyError(
                    f"{target} is being written by another run (process {pid or '?'}): wait for "
                    f"it to finish, or stop it; if it is gone, delete {marker.name}"
                ) from None
            marker.unlink(missing_ok=True)  # a dead or far run's mark
            continue
        with os.fdopen(fd, "w") as fh:
            fh.write(f"{os.getpid()}@{host}")
        break
    try:
        yield
    finally:
        marker.unlink(missing_ok=True)
