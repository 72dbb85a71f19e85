"""Python's cyclic garbage collector: paused around bulk work, and tuned for a long run.

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


# A young generation of this many allocations, and the older ones collected this much less often.
LONG_RUN_THRESHOLD = (50_000, 20, 10)


def tune_for_long_run() -> None:
    """For a process that runs until stopped (`run`), once it is built.

    What start-up made (modules, the catalog, compiled templates, the engine) lives as long as
    the process: frozen, the collector no longer walks it at every full collection. And a
    collection every 50,000 allocations rather than 700: a text makes a few hundred short-lived
    objects, almost none in cycles (reference counting frees them), and with hundreds of sends
    in flight the default thresholds had the collector walk them all many times a second: it
    cost a fifth to a third of a text's CPU at 100 ms provider latency (bench/sms_dispatch.py).
    Cycles are still found; the oldest generation is searched every ~10 million allocations."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*LONG_RUN_THRESHOLD)
