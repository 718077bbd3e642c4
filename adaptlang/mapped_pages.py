"""Memory-mapped Arrow files whose pages leave the process's memory once read.

``datasets`` keeps text and blocks in Arrow files that it memory-maps. A page of such a
mapping that was read stays in the process's RSS while the file is mapped: one pass over a
corpus's text, the record-batch headers read when a file is opened, and random draws of
blocks all grew RSS with the corpus (a 1 GB corpus doubled it). ``release_mapped_pages``
gives those pages back; they stay in the page cache, and a later read maps them again.
"""
from __future__ import annotations

import ctypes
import functools
import os
import sys
import weakref

from datasets.table import ConcatenationTable, MemoryMappedTable

MADV_DONTNEED = 4
_ranges: dict[int, list[tuple[int, int]]] = {}  # id of a live MemoryMappedTable -> its file's mappings


def release_mapped_pages(examples) -> None:
    """``madvise(MADV_DONTNEED)`` on the read-only mappings of the Arrow files that the
    Dataset ``examples`` is memory-mapped from (nothing for a list, an in-memory Dataset, or
    off Linux). Only mappings that its tables hold (one of their buffers lies in them, checked
    in /proc/self/maps once per table) are touched: they stay mapped while the table lives, so
    no other memory is ever advised. The bytes are read back from the file or the page cache
    when touched again."""
    tables = list(_mapped_tables(getattr(examples, "_data", None)))
    if not tables or _libc() is None:
        return
    new = [t for t in tables if id(t) not in _ranges]
    if new:
        _find_mappings(new)
    for table in tables:
        for start, end in _ranges.get(id(table), ()):
            _libc().madvise(start, end - start, MADV_DONTNEED)


def _mapped_tables(table):
    if isinstance(table, ConcatenationTable):
        for row in table.blocks:
            for block in row:
                yield from _mapped_tables(block)
    elif isinstance(table, MemoryMappedTable) and table.table.num_rows:
        yield table


def _find_mappings(tables: list) -> None:
    """Each table's read-only mappings of its own file that contain one of its buffers."""
    try:
        with open("/proc/self/maps") as maps:
            lines = maps.read().splitlines()
    except OSError:
        return
    for table in tables:
        path = os.path.realpath(table.path)
        buffers = [b for b in table.table.column(0).chunk(0).buffers() if b is not None and b.size]
        ranges = []
        for line in lines:
            fields = line.split(maxsplit=5) if line.endswith(path) else ()
            if len(fields) == 6 and fields[5] == path and "w" not in fields[1]:
                start, end = (int(x, 16) for x in fields[0].split("-"))
                if any(start <= b.address < end for b in buffers):
                    ranges.append((start, end))
        _ranges[id(table)] = ranges
        weakref.finalize(table, _ranges.pop, id(table), None)


@functools.lru_cache(maxsize=1)
def _libc():
    if not sys.platform.startswith("linux"):
        return None
    libc = ctypes.CDLL(None, use_errno=True)
    libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    return libc
