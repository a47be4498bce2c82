"""Number the distinct (a, b) pairs of two columns by hashing, without sorting.

A report's 200k+ samples hold a few thousand distinct (pid, ip) pairs: resolving each pair
once instead of each sample is most of a report's speed.  np.unique would sort (argsort of
u64 keys, ~10 ms for 240k); hashing into a table is a handful of linear passes (~4 ms).
"""

from __future__ import annotations

import numpy as np

_GOLDEN = (0x9E3779B97F4A7C15, 0xC2B2AE3D27D4EB4F, 0x165667B19E3779F9, 0xD6E8FEB86659FD93)
_SORTED = 4096   # this few left after a round: numbered by sorting them


def distinct_pairs(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(ids, first): ids[i] numbers the pair (a[i], b[i]) among the distinct pairs (0, 1,
    ... in no particular order), and first[k] is an index i whose pair is number k.  `a`
    and `b` are integer columns of one length (compared as 64-bit values).

    Each round hashes the pairs still unplaced into a table, each slot keeps the last
    pair written to it, and the elements whose pair is the one kept are placed.  Every
    round places at least one pair per slot written, so what is left shrinks fast (a few
    dozen collisions among 3.5k pairs in a 2**18 table); the last few thousand, if any,
    are numbered by np.unique."""
    a = np.asarray(a).astype(np.uint64, copy=False)
    b = np.asarray(b).astype(np.int64, copy=False).view(np.uint64)
    n = len(a)
    bucket = np.empty(n, dtype=np.int64)      # a number per pair, with gaps
    base = 0                                  # numbers taken by the rounds so far
    todo: np.ndarray | None = None            # None: every element (the first round)
    for mult in _GOLDEN:
        ta = a if todo is None else a[todo]
        tb = b if todo is None else b[todo]
        # as many slots as elements, 1k to 4M (two 32 MiB tables for the largest)
        bits = min(22, max(10, len(ta).bit_length()))
        h = ((ta ^ (tb * np.uint64(0xFF51AFD7ED558CCD))) * np.uint64(mult)) \
            >> np.uint64(64 - bits)
        h = h.view(np.intp)   # below 2**22: the same numbers, no copy
        slot_a = np.empty(1 << bits, dtype=np.uint64)
        slot_b = np.empty(1 << bits, dtype=np.uint64)
        slot_a[h] = ta
        slot_b[h] = tb
        ok = (slot_a[h] == ta) & (slot_b[h] == tb)
        h += base
        base += 1 << bits
        if todo is None:
            bucket[:] = h                     # the misses are numbered again below
            todo = np.flatnonzero(~ok)
        else:
            bucket[todo[ok]] = h[ok]
            todo = todo[~ok]
        if len(todo) <= _SORTED:
            break
    if todo is not None and len(todo):
        pairs = np.stack([a[todo], b[todo]], axis=1)
        _uniq, inverse = np.unique(pairs, axis=0, return_inverse=True)
        bucket[todo] = base + inverse.reshape(-1)
        base += len(_uniq)
    # the numbers used, renumbered 0..k-1
    used = np.zeros(base, dtype=bool)
    used[bucket] = True
    used = np.flatnonzero(used)
    number = np.empty(base, dtype=np.int64)
    number[used] = np.arange(len(used))
    ids = number[bucket]
    first = np.empty(len(used), dtype=np.int64)
    first[ids] = np.arange(n, dtype=np.int64)
    return ids, first
