"""Process-level memory tuning for the commands that stream whole artifacts."""

from __future__ import annotations


def keep_heap() -> None:
    """Ask glibc to serve many-megabyte buffers from the heap and keep freed memory for reuse.

    Streaming an artifact allocates a fresh buffer of 1-4 MiB per read (decompressed chunks, psql
    output, the digest's parse). By default glibc maps each one anew, zero-fills it page by page and
    unmaps it after use: ~1 CPU-s of page faults per 0.6 GB dump in the digest process (measured:
    4.3 -> 3.5 s). For one-shot commands only: a long-lived process would keep up to 1 GiB it freed.
    A no-op where libc is not glibc."""
    import ctypes

    try:
        libc = ctypes.CDLL("libc.so.6")  # glibc's soname; elsewhere there is nothing to tune
        libc.mallopt(-3, 256 << 20)  # M_MMAP_THRESHOLD: heap, not mmap, below 256 MiB
        libc.mallopt(-1, 1 << 30)  # M_TRIM_THRESHOLD: keep up to 1 GiB of freed heap
    except (OSError, AttributeError):
        pass
