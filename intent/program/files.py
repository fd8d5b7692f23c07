"""Writing a file whole or not at all: into a temporary file of the same folder, then renamed over the target, so a
reader (another process loading a fitted model or a saved program) never sees half of one."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path


def write_atomically(path: str | os.PathLike, write: Callable[[str], object], *, suffix: str = ".tmp") -> None:
    """`write(temporary_path)` then rename it to `path` (its folder made if missing)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp = tempfile.mkstemp(dir=path.parent, suffix=suffix)
    os.close(handle)
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
