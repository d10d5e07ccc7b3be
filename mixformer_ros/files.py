"""Writing a file so that readers and interrupted runs see the old contents or the new, never half."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from pathlib import Path


def replace_atomically(path: str | os.PathLike, write: Callable[[Path], object]) -> None:
    """Call ``write(tmp)`` with a temporary sibling of ``path``, then rename it over ``path``.

    The sibling's name is unique to the writing process and thread, so two writers of one file
    (two nodes sharing an export cache) never write into each other's; a failed write removes it.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
