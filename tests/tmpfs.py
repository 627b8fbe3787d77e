"""A small tmpfs mounted for a test (disk-full and read-only cases); skips where mounting is not allowed."""

from __future__ import annotations

import contextlib
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest


@contextlib.contextmanager
def mounted_tmpfs(options: str, prefix: str) -> Iterator[Path]:
    """A tmpfs mounted with `options` (e.g. "size=64k", "ro,size=64k"), unmounted and removed afterwards."""
    folder = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(folder)],
                              capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as err:
        folder.rmdir()
        pytest.skip(f"cannot mount a tmpfs: {err}")
    if done.returncode != 0:
        folder.rmdir()
        pytest.skip(f"cannot mount a tmpfs -o {options} (needs root): {done.stderr.strip()}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", str(folder)], capture_output=True, timeout=30)
        folder.rmdir()
