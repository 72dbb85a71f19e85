"""Pause Python's cyclic garbage collector around bulk work.

A large import allocates millions of small objects that live until the chunk is written (rows,
tuples, unpickled appointments); each allocation burst triggers collections that find nothing,
because none of these objects form cycles. Reference counting still frees them as usual; only
the cycle search waits until the block ends.
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
