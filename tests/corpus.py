"""The test corpus: real text nobody here wrote, so tokenization sees real language — the license
texts Debian's base-files ships in /usr/share/common-licenses (the same on every Debian)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

LICENSES = Path("/usr/share/common-licenses")


def corpus(n: int = 120) -> list[str]:
    """The first n distinct non-blank lines of the license texts (the same on every Debian)."""
    seen: dict[str, None] = {}
    for path in sorted(p for p in LICENSES.iterdir() if p.is_file()):
        for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
            line = line.strip()
            if len(line) > 3:
                seen.setdefault(line)
            if len(seen) == n:
                return list(seen)
    return list(seen)


TEXTS = corpus()


def vectors_of(table) -> np.ndarray:
    column = table.column("embedding").combine_chunks()
    return column.flatten().to_numpy(zero_copy_only=False).reshape(len(table), column.type.list_size)
