"""Which memory allocator this process runs on, and the one a CPU training run should.

With glibc's malloc a training step slows as the run goes on (its tensors change shape every batch, and freed blocks
go back to the system and fault in again): on 2 cores, 100 steps of the `cpu` preset went from 1.8 to 2.5 ms a token
and took 286 s, against a flat 1.7 ms and 240 s with jemalloc preloaded (docs/training-speed.md). An allocator is
chosen before a process starts (LD_PRELOAD), so this module can only say which one is in use and where jemalloc is;
`scripts/demo.sh` preloads it and `scripts/setup.sh` installs it.

jemalloc as it comes, though, hands freed pages back to the system ten seconds after their last use (its
`dirty_decay_ms`), and a process that allocates tensors of new sizes all the time (every decoding step grows each
layer's keys and values by a token) keeps faulting fresh pages in: on two AVX2 cores, 23 constrained answers took 36-40 s
under it against 20-22 s under glibc's malloc, and 16 fp32 steps of the `cpu` preset with two pick checks 224 s of
`train_runtime` against 173 s. With its decay off (freed pages kept for reuse) they took 20 s and 162 s, at 0.8 GB more
peak memory (docs/training-speed.md, "The memory allocator"). `keep_freed_pages` turns the decay off from inside the
process, through jemalloc's `mallctl`, so preloading jemalloc is all a command needs.
"""
from __future__ import annotations

import ctypes
import logging
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

FAST_ALLOCATORS = ("jemalloc", "tcmalloc")
JEMALLOC_LIBRARY = "libjemalloc.so.2"


def active_allocator(maps: Path = Path("/proc/self/maps")) -> str:
    """"jemalloc" or "tcmalloc" when that library is mapped into this process, else "glibc" (or "unknown" where the
    process's maps cannot be read, as off Linux)."""
    try:
        mapped = maps.read_text()
    except OSError:
        return "unknown"
    return next((name for name in FAST_ALLOCATORS if f"lib{name}" in mapped), "glibc")


def jemalloc_path() -> str | None:
    """Where the dynamic linker finds jemalloc on this machine, if it does."""
    ldconfig = shutil.which("ldconfig", path=f"{os.environ.get('PATH', '')}:/sbin:/usr/sbin")
    if ldconfig is None:
        return None
    listing = subprocess.run([ldconfig, "-p"], capture_output=True, text=True, check=False).stdout
    return next((line.rsplit("=>", 1)[1].strip() for line in listing.splitlines()
                 if line.strip().startswith(JEMALLOC_LIBRARY) and "=>" in line), None)


def _mallctl() -> Any | None:
    """jemalloc's control function in this process, when jemalloc is mapped (preloaded) into it."""
    return getattr(ctypes.CDLL(None), "mallctl", None)


def _get(mallctl: Any, name: str, kind: Any) -> int | None:
    """The value of jemalloc setting `name`, of ctypes type `kind`; None when jemalloc refuses it."""
    number, size = kind(), ctypes.c_size_t(ctypes.sizeof(kind))
    return number.value if mallctl(name.encode(), ctypes.byref(number), ctypes.byref(size), None, ctypes.c_size_t(0)) == 0 else None


def _set_ssize(mallctl: Any, name: str, value: int) -> bool:
    number = ctypes.c_ssize_t(value)
    return mallctl(name.encode(), None, None, ctypes.byref(number), ctypes.c_size_t(ctypes.sizeof(number))) == 0


def jemalloc_decay_ms() -> tuple[int, int] | None:
    """The dirty and muzzy page decay (ms) jemalloc gives arenas it creates in this process (-1: freed pages are never
    handed back); None when jemalloc is not in use."""
    mallctl = _mallctl()
    if mallctl is None:
        return None
    dirty, muzzy = (_get(mallctl, f"arenas.{kind}_decay_ms", ctypes.c_ssize_t) for kind in ("dirty", "muzzy"))
    return None if dirty is None or muzzy is None else (dirty, muzzy)


def keep_freed_pages() -> bool:
    """Under jemalloc, turn its page decay off for the arenas it has and those it will create, so that freed pages
    are reused instead of handed back and faulted in again; True when done. A MALLOC_CONF that sets a decay is the
    user's choice and is left alone."""
    mallctl = _mallctl()
    if mallctl is None or "decay_ms" in os.environ.get("MALLOC_CONF", ""):
        return False
    arenas = _get(mallctl, "arenas.narenas", ctypes.c_uint)
    if arenas is None:
        return False
    for kind in ("dirty", "muzzy"):
        if not _set_ssize(mallctl, f"arenas.{kind}_decay_ms", -1):
            return False
        for index in range(arenas):  # an arena not created yet refuses, and takes the default above when it is
            _set_ssize(mallctl, f"arena.{index}.{kind}_decay_ms", -1)
    return True


# What jemalloc may hold in freed pages before `bound_freed_pages` hands them back. With its decay off it kept
# every page a run ever freed on a Zen 5 EPYC (AVX512-BF16): a bf16 `cpu` preset run grew by about 0.1 GB a step,
# from 2.3 GB (glibc's malloc, flat) to 23 GB at step 120, where the machine ran out of memory.
FREED_BYTES_LIMIT = 2 * 1024**3
ALL_ARENAS = 4096  # jemalloc's MALLCTL_ARENAS_ALL


def freed_bytes_kept() -> int | None:
    """The bytes jemalloc holds in pages beyond those its allocations use (resident minus allocated, from freshly
    refreshed statistics); None when jemalloc is not in use or keeps no statistics."""
    mallctl = _mallctl()
    if mallctl is None:
        return None
    epoch = ctypes.c_uint64(1)
    if mallctl(b"epoch", None, None, ctypes.byref(epoch), ctypes.c_size_t(ctypes.sizeof(epoch))) != 0:
        return None
    resident, allocated = (_get(mallctl, f"stats.{name}", ctypes.c_size_t) for name in ("resident", "allocated"))
    return None if resident is None or allocated is None else max(resident - allocated, 0)


def bound_freed_pages(limit: int = FREED_BYTES_LIMIT) -> bool:
    """Under jemalloc, hand the freed pages it keeps back to the system once they exceed `limit` bytes; True when it
    did. Cheap enough to call after every training step or evaluation batch: below the limit it only reads two
    statistics, and above it the pages faulted in again cost one step a little, not every step."""
    kept = freed_bytes_kept()
    if kept is None or kept <= limit:
        return False
    purged = _mallctl()(f"arena.{ALL_ARENAS}.purge".encode(), None, None, None, ctypes.c_size_t(0)) == 0
    logger.debug("jemalloc held %.1f GB of freed pages: %s", kept / 1024**3, "handed back" if purged else "purge refused")
    return purged


def log_allocator() -> None:
    """For a CPU run: keep jemalloc's freed pages (`keep_freed_pages`), and one line for the log: the allocator, and
    how to switch when it is glibc's."""
    allocator = active_allocator()
    if allocator != "glibc":
        kept = allocator == "jemalloc" and keep_freed_pages()
        decay = jemalloc_decay_ms() if allocator == "jemalloc" and not kept else None
        logger.info("Memory allocator: %s%s.", allocator,
                    ", freed pages kept for reuse (decay off)" if kept else f", page decay (dirty, muzzy) {decay} ms" if decay else "")
        return
    found = jemalloc_path()
    fix = f"LD_PRELOAD={found}" if found else f"LD_PRELOAD=/path/to/{JEMALLOC_LIBRARY} (Debian: apt install libjemalloc2)"
    logger.warning("Memory allocator: glibc's, under which CPU training steps slow by about a quarter over a run; "
                   "start the command with %s to keep them flat (docs/training-speed.md).", fix)
