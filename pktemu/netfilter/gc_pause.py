"""The cyclic garbage collector held off while a big load or copy only adds objects: its passes
over them would cost a large part of the work, though a ruleset's objects live as long as it does.
"""
from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterator


#: whether pktemu itself holds frozen objects (hold_frozen): gc.get_freeze_count() walks every frozen
#: object, a few milliseconds per call over a big cluster's network, and settle_young is called at
#: every restore of a run
_held = False


def hold_frozen() -> bool:
    """Freeze every object tracked so far (gc.freeze) unless something of the process froze objects
    already (theirs to unfreeze); True if frozen here, to be undone by release_frozen()."""
    global _held
    if _held or gc.get_freeze_count() != 0:
        return False
    gc.freeze()
    _held = True
    return True


def release_frozen() -> None:
    global _held
    if _held:
        _held = False
        gc.unfreeze()


def settle_young() -> None:
    """Move the young objects to the oldest generation without a pass over them: else the first
    allocation after a big load pays a young-generation collection of everything it made (~15% of
    the load), though a ruleset's objects live as long as it does. They are still collected by a
    full collection, as objects that survived two passes would be. Only when nothing is frozen
    (gc.freeze is the program's own to use)."""
    if not _held and gc.get_freeze_count() == 0:
        gc.freeze()
        gc.unfreeze()


#: a table copied mid-run with at least this many rules is copied with the cyclic GC held off
MANY_RULES = 1000


@contextlib.contextmanager
def adding_objects() -> Iterator[None]:
    """Around a copy, which only adds objects: the cyclic GC's passes over them would cost 80%
    (and they are moved out of the young generation after, see settle_young)."""
    collecting = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if collecting:
            settle_young()
            gc.enable()
