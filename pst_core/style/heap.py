"""The C library's heap, where the transfer's tensors live on the CPU (glibc; elsewhere these do nothing).

glibc serves every allocation of 32 MiB or more with a fresh ``mmap`` and unmaps it when it is freed:
the next iteration's activations of the same size then fault in and zero every page again. At 1024 px
a transfer spent as much time in the kernel as in the network (14.4 s per iteration, 51 s of system
time in 72 s); kept in the heap and reused, the same iteration takes 7.5 s. The price is memory: freed
blocks stay resident until trimmed, and the heap fragments (0.4 to 0.6 of one pass's activations
above the peak, measured at 1024 and 2048 px), which the memory plan counts (``ScalePlan.reuse_heap``).

Threads other than the main one allocate from heaps of their own, which hand every block over 64 MiB
to ``mmap`` whatever the threshold: a process whose transfers run in worker threads (Prefect's task
runs) must use one heap for all threads (``one_heap``, before any thread allocates).
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import functools
import os

# mallopt's parameters (malloc.h)
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD, _M_ARENA_MAX = -1, -3, -8
_LARGEST = 2 ** 31 - 1  # mallopt takes an int
# What a long-running torch process reaches with glibc's dynamic thresholds, restored after a scale.
_USUAL_MMAP, _USUAL_TRIM = 32 * 2 ** 20, 64 * 2 ** 20


@functools.cache
def _libc():
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c"))
        return libc if hasattr(libc, "mallopt") and hasattr(libc, "malloc_trim") else None
    except (OSError, AttributeError, TypeError):  # no C library found
        return None


def _glibc():
    """glibc's functions, or None elsewhere (macOS, musl: their allocators have no such settings)."""
    libc = _libc()
    try:
        return libc if libc is not None and os.confstr("CS_GNU_LIBC_VERSION") else None
    except (ValueError, OSError):  # the name is glibc's own
        return None


def release_freed_memory() -> bool:
    """Give the pages that freed memory holds back to the system (glibc's ``malloc_trim``); False
    where that is not available.

    Freed memory stays in the process's heaps: in a pipeline run the stages before the transfer left
    0.64 GiB there, and each coarse scale leaves its own, which a larger scale's tensors cannot always
    reuse. It takes about 0.1 s per GiB freed, a few milliseconds when little is."""
    libc = _glibc()
    if libc is None:
        return False
    libc.malloc_trim(0)
    return True


def one_heap() -> bool:
    """Let every thread allocate from the main heap (glibc's ``M_ARENA_MAX`` = 1), so that a
    transfer in a worker thread can keep its large blocks (``reuse_freed_memory``). It binds threads
    that have not allocated yet: call it first thing in a process. False where not available."""
    libc = _glibc()
    return libc is not None and bool(libc.mallopt(_M_ARENA_MAX, 1))


@contextlib.contextmanager
def reuse_freed_memory(enabled: bool = True):
    """Inside: large blocks come from the heap and freed ones stay there for the next allocation (no
    ``mmap``, no page faults); after: the usual thresholds (``release_freed_memory`` gives back what
    the heap then holds)."""
    libc = _glibc() if enabled else None
    if libc is None:
        yield False
        return
    libc.mallopt(_M_MMAP_THRESHOLD, _LARGEST)
    libc.mallopt(_M_TRIM_THRESHOLD, _LARGEST)
    try:
        yield True
    finally:
        libc.mallopt(_M_MMAP_THRESHOLD, _USUAL_MMAP)
        libc.mallopt(_M_TRIM_THRESHOLD, _USUAL_TRIM)
