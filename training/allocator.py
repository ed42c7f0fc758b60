"""Keep glibc from handing a training process's freed activations back to the kernel.

glibc serves large allocations with their own `mmap` and unmaps them when freed (and trims the
heap's free top); a training step frees and re-allocates the same activations every step, so on
a CPU each of them is faulted in again page by page: thousands of page faults per MobileNetV3-small
step at 96 px (tests/test_allocator.py), more for larger inputs (the time it saves is in
docs/performance.md). `keep_freed_memory` does from inside the process what
`MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=...` in the environment would before it starts: every
allocation from the heap, the heap never trimmed. The price is that the process keeps its peak
heap until it exits, which a training run reaches every step anyway.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import platform

M_TRIM_THRESHOLD = -1  # glibc's malloc.h
M_TOP_PAD = -2
M_MMAP_MAX = -4
NEVER_TRIM = 2**31 - 1  # bytes of free heap top before trimming: the largest the int allows
TOP_PAD = 2**28  # the heap grows by 256 MB at a time (address space; pages are faulted in when used)


def keep_freed_memory() -> bool:
    """Serve every allocation from the heap and never trim it (glibc only; elsewhere nothing is
    changed). True when glibc accepted all three settings."""
    if platform.libc_ver()[0] != "glibc":
        return False
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    settings = ((M_MMAP_MAX, 0), (M_TRIM_THRESHOLD, NEVER_TRIM), (M_TOP_PAD, TOP_PAD))
    return all([bool(libc.mallopt(option, value)) for option, value in settings])
