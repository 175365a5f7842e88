"""Writing files so that a reader never sees half of one: a temp file beside the target, then a rename."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def write_text_atomic(target: Path, text: str, overwrite: bool = True) -> bool:
    """Write `text` to `target` all at once; False (nothing written) when it exists and not `overwrite`."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, temp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as out:
            out.write(text)
            out.flush()
            os.fsync(out.fileno())
        if overwrite:
            os.replace(temp, target)
            return True
        try:
            os.link(temp, target)  # fails if the target exists, even one created a moment ago
        except FileExistsError:
            return False
        except OSError:  # a file system without hard links: reserve the name, then replace it
            try:
                os.close(os.open(target, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
            except FileExistsError:
                return False
            os.replace(temp, target)
        return True
    finally:
        if os.path.exists(temp):
            os.unlink(temp)
