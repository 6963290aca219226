"""Which memory allocator this process runs on, and the one a CPU training run should.

With glibc's malloc a training step slows as the run goes on (its tensors change shape every batch, and freed blocks
go back to the system and fault in again): on 2 cores, 100 steps of the `cpu` preset went from 1.8 to 2.5 ms a token
and took 286 s, against a flat 1.7 ms and 240 s with jemalloc preloaded (docs/training-speed.md). An allocator is
chosen before a process starts (LD_PRELOAD), so this module can only say which one is in use and where jemalloc is;
`scripts/demo.sh` preloads it and `scripts/setup.sh` installs it.
"""
from __future__ import annotations

import logging
import os
import shutil
import subprocess
from pathlib import Path

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


def log_allocator() -> None:
    """One line for a CPU run's log: the allocator, and how to switch when it is glibc's."""
    allocator = active_allocator()
    if allocator != "glibc":
        logger.info("Memory allocator: %s.", allocator)
        return
    found = jemalloc_path()
    fix = f"LD_PRELOAD={found}" if found else f"LD_PRELOAD=/path/to/{JEMALLOC_LIBRARY} (Debian: apt install libjemalloc2)"
    logger.warning("Memory allocator: glibc's, under which CPU training steps slow by about a quarter over a run; "
                   "start the command with %s to keep them flat (docs/training-speed.md).", fix)
