"""What every benchmark script shares: the marked table block of ``benchmarks/README.md``."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

README = Path(__file__).resolve().parent / "README.md"


def update_readme_block(
    begin: str, end: str, table: str, heading: str | None = None, readme: Path = README
) -> None:
    """Replace the text between the ``begin`` / ``end`` markers of ``readme`` with ``table`` (written atomically);
    without the markers, append them (under ``heading`` when given)."""
    text = readme.read_text(encoding="utf-8") if readme.is_file() else ""
    block = f"{begin}\n{table}\n{end}"
    if begin in text and end in text:
        head, rest = text.split(begin, 1)
        _, tail = rest.split(end, 1)
        text = head + block + tail
    else:
        lead = f"\n\n{heading}\n\n" if heading else "\n\n"
        text = (text.rstrip() + lead if text else "") + block + "\n"
    handle, tmp = tempfile.mkstemp(dir=readme.parent, prefix=f".{readme.name}.")
    with os.fdopen(handle, "w", encoding="utf-8") as out:
        out.write(text)
    os.replace(tmp, readme)
