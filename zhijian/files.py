"""Writing files and folders so that a reader, or a crash, never sees half of one.

Every result, config, export and model folder goes through here: it is written beside its final
place under a hidden staging name, then renamed over it (a rename within a folder is atomic).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def staged(path: str | Path) -> Iterator[Path]:
    """A staging path beside `path` for the block to write, a file or a folder; put in place of `path` when the
    block ends, removed when it raises (the old file or folder, if any, stays as it was)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = path.with_name(f".{path.name}.tmp")
    shutil.rmtree(staging, ignore_errors=True)  # left by a crash
    try:
        yield staging
        if staging.is_dir():
            replace_folder(staging, path)
        else:
            os.replace(staging, path)
    finally:
        if staging.is_dir():
            shutil.rmtree(staging, ignore_errors=True)
        else:
            staging.unlink(missing_ok=True)


def write_atomic(path: str | Path, text: str) -> Path:
    """Write a UTF-8 text file whole."""
    with staged(path) as staging:
        staging.write_text(text, encoding="utf-8")
    return Path(path)


def replace_folder(staging: str | Path, folder: str | Path) -> Path:
    """Put a finished folder in place of `folder`: the old one is moved aside first, then removed, so at any
    moment `folder` is the old whole folder, the new whole one, or (for an instant) absent."""
    staging, folder = Path(staging), Path(folder)
    if folder.exists():
        retired = folder.with_name(f".{folder.name}.old")
        shutil.rmtree(retired, ignore_errors=True)
        os.replace(folder, retired)
        os.replace(staging, folder)
        shutil.rmtree(retired, ignore_errors=True)
    else:
        os.replace(staging, folder)
    return folder
