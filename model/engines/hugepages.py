"""Memory on 2 MB pages for the weights every decode step streams (imports torch).

Why: a decode step reads every packed weight once; SmolLM2's are 92 MB, about 23,500 pages of
4 KB, far more than the TLB holds, so the step pays a page walk every 4 KB (two levels of them
in a VM: the guest's tables, then the host's). On 2 MB pages the same bytes are 46 pages. The
211 kernel.c calls of a SmolLM2 step, the same weights in both kinds of memory side by side in
one process (`python bench/cpu_decode.py pages`): 1.12-1.18x faster at one to four rows, 1.03x
at eight; served, one stream 1.08x and eight 1.03x (bench/RESULTS.md, "Engine speed on CPU,
part 10").

torch allocates with malloc, which Linux backs with 4 KB pages unless transparent huge pages
are "always" (most distributions ship "madvise"). A private anonymous mapping marked
MADV_HUGEPAGE before its first touch gets 2 MB pages wherever THP is "always" or "madvise";
with THP off (or on another OS) `copy_in` returns None and the weights stay where they are.

    moved = copy_in([a, b])   # copies of a and b side by side on 2 MB pages, or None
    huge_bytes(moved[0])      # bytes of its mapping that are on huge pages (0: none)
    return_freed()            # once the originals are dropped: their memory back to the system
"""

from __future__ import annotations

import ctypes
import mmap
from pathlib import Path

import torch

PAGE = 2 << 20  # a huge page on x86-64 and arm64 (4 KB base pages)
ALIGN = 64  # each copy starts on a cache line
THP = Path("/sys/kernel/mm/transparent_hugepage/enabled")


def available() -> bool:
    """Whether a mapping marked MADV_HUGEPAGE gets huge pages here: Linux with THP on
    ("[always]" or "[madvise]" in sysfs), and a Python that can ask (mmap.MADV_HUGEPAGE)."""
    if not hasattr(mmap, "MADV_HUGEPAGE"):
        return False
    try:
        mode = THP.read_text()
    except OSError:
        return False
    return "[always]" in mode or "[madvise]" in mode


def copy_in(tensors: list[torch.Tensor]) -> list[torch.Tensor] | None:
    """Copies of `tensors` (contiguous, on the CPU) side by side in one mapping on 2 MB pages,
    each at a 64-byte boundary, the first at a page's start; the copies keep the mapping alive.
    None where there would be no huge page: THP off, or less than one page of bytes."""
    if sum(_sizes(tensors)) < PAGE or not available():
        return None
    return side_by_side(tensors, mmap.MADV_HUGEPAGE)


def side_by_side(tensors: list[torch.Tensor], advice: int | None) -> list[torch.Tensor]:
    """Copies of `tensors` in one private anonymous mapping given `advice` (madvise) before its
    first touch, laid out as copy_in says. bench/cpu_decode.py's 4 KB arm: MADV_NOHUGEPAGE."""
    sizes = _sizes(tensors)
    # A page of slack, so that the copies can start on a 2 MB boundary; its untouched part
    # takes no memory.
    mapping = mmap.mmap(-1, sum(sizes) + PAGE, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    if advice is not None:
        mapping.madvise(advice)  # before the first touch: the faults follow it
    block = torch.frombuffer(mapping, dtype=torch.uint8)
    at = -block.data_ptr() % PAGE
    copies = []
    for t, size in zip(tensors, sizes, strict=True):
        copy = block[at : at + t.nbytes].view(t.dtype).view(t.shape)
        copy.copy_(t)
        copies.append(copy)
        at += size
    return copies


def _sizes(tensors: list[torch.Tensor]) -> list[int]:
    return [-(-t.nbytes // ALIGN) * ALIGN for t in tensors]


def huge_bytes(t: torch.Tensor) -> int:
    """Bytes of the mapping that holds `t` that are on huge pages (/proc/self/smaps); 0 where
    none are or the system does not say."""
    address = t.data_ptr()
    inside = False
    try:
        with open("/proc/self/smaps") as smaps:
            for line in smaps:
                head = line.split(None, 1)[0] if line.strip() else ""
                if "-" in head and not head.endswith(":"):  # a mapping's first line
                    start, end = (int(x, 16) for x in head.split("-"))
                    inside = start <= address < end
                elif inside and head == "AnonHugePages:":
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    return 0


def return_freed() -> None:
    """Free memory in malloc's heap back to the system (glibc's malloc_trim): the originals that
    copy_in's copies replace were freed into the heap, where SmolLM2's 80 MB stayed in the
    worker's RSS. Elsewhere (another libc) nothing."""
    try:
        trim = ctypes.CDLL(None).malloc_trim  # the C library the interpreter runs on
    except (OSError, AttributeError):
        return
    trim(0)
