"""Atomic file output: write to a temporary name in the same directory, then rename.

An interrupted run therefore never leaves a half-written parquet, JSON or HTML file behind.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any


@contextlib.contextmanager
def atomic_path(target: str | Path) -> Iterator[Path]:
    """Yield a temporary path next to ``target``; on success rename it over ``target``."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        # mkstemp creates owner-only files; give the output the mode a plain open() would (umask-based)
        umask = os.umask(0)
        os.umask(umask)
        if tmp_path.exists():
            os.chmod(tmp_path, 0o666 & ~umask)
        os.replace(tmp_path, target)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def write_text(target: str | Path, text: str) -> Path:
    with atomic_path(target) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(target)


def write_bytes(target: str | Path, data: bytes) -> Path:
    with atomic_path(target) as tmp:
        tmp.write_bytes(data)
    return Path(target)


def write_json(target: str | Path, obj: Any) -> Path:
    """Write JSON with sorted keys and a trailing newline (stable bytes for identical content)."""
    return write_text(
        target, json.dumps(obj, indent=2, sort_keys=True, ensure_ascii=False, default=str) + "\n"
    )


def write_parquet(df: Any, target: str | Path) -> Path:
    """Write a pandas DataFrame to parquet atomically (index dropped)."""
    with atomic_path(target) as tmp:
        df.to_parquet(tmp, index=False)
    return Path(target)


def sha256_file(path: str | Path) -> str:
    """Hex SHA-256 of a file's bytes, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
