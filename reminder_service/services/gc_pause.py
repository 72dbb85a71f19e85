"""Pause Python's cyclic garbage collector around bulk work.

A large import allocates millions of small objects that live until the chunk is written (rows,
tuples, unpickled appointments); each allocation burst triggers collections that find nothing,
because none of these objects form cycles. Reference counting still frees them as usual; only
the cycle search waits until the block ends.

A few objects do form cycles (SQLAlchemy's statements, which hold their parameters: a chunk's
appointment ids). Work that streams a file through a paused block calls `collect_young` between
chunks, or they would pile up with the file.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def paused_gc() -> Iterator[None]:
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def collect_young() -> None:
    """Free the cycles made since the last call: only the young generations are searched, so it
    costs what was made since, not the whole heap."""
    gc.collect(1)
