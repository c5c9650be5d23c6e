"""Write files so that a reader sees the old file or the complete new one, never half."""

from __future__ import annotations

import os
import tempfile
from contextlib import contextmanager


@contextmanager
def atomic_path(path: str | os.PathLike):
    """Yield a temporary path beside ``path``; move it into place only if the block
    finishes, remove it otherwise."""
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=folder)
    os.close(fd)
    # mkstemp's 0600 would surprise whoever shares the file; a file replaced keeps its mode
    try:
        mode = os.stat(path).st_mode & 0o7777
    except OSError:
        umask = os.umask(0)
        os.umask(umask)
        mode = 0o666 & ~umask
    os.chmod(tmp, mode)
    try:
        yield tmp
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def is_temp_name(name: str) -> bool:
    """Whether ``name`` is one of atomic_path's temporary files (``.NAME.XXXXXXXX.tmp``)."""
    return name.startswith(".") and name.endswith(".tmp") and name.count(".") >= 3


def sweep_temp_files(folder) -> int:
    """Remove temporary files that a killed run left in ``folder`` (and below); only call
    this while holding the folder (no other writer). Returns how many."""
    removed = 0
    for root, _, files in os.walk(folder):
        for name in files:
            if is_temp_name(name):
                os.unlink(os.path.join(root, name))
                removed += 1
    return removed
