"""The allocator check tells jemalloc from glibc's malloc in a real process, and says how to switch."""
import logging
import subprocess
import sys
from pathlib import Path

import pytest

from rl.core.allocator import active_allocator, jemalloc_path, log_allocator

REPORT = "from rl.core.allocator import active_allocator; print(active_allocator())"
DECAY = ("from rl.core.allocator import jemalloc_decay_ms, keep_freed_pages\n"
         "before = jemalloc_decay_ms(); kept = keep_freed_pages(); print(before, kept, jemalloc_decay_ms(), sep=';')")


def _run_child(code: str, env_extra: dict[str, str]) -> str:
    env = {"PATH": "/usr/bin:/bin", **env_extra}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env,
                          cwd=Path(__file__).resolve().parents[1]).stdout.strip()


def _allocator_of_child(env_extra: dict[str, str]) -> str:
    return _run_child(REPORT, env_extra)


def test_a_process_started_with_jemalloc_preloaded_reports_it_and_one_without_reports_glibc():
    path = jemalloc_path()
    assert path, "scripts/setup.sh installs libjemalloc2"
    assert _allocator_of_child({"LD_PRELOAD": path}) == "jemalloc"
    assert _allocator_of_child({}) == "glibc"


def test_under_jemalloc_freed_pages_are_kept_from_inside_the_process():
    before, kept, after = _run_child(DECAY, {"LD_PRELOAD": jemalloc_path()}).split(";")
    assert before != "(-1, -1)", "jemalloc as it comes hands freed pages back"
    assert (kept, after) == ("True", "(-1, -1)")


def test_a_decay_the_user_set_is_left_alone_and_glibc_has_nothing_to_keep():
    before, kept, after = _run_child(DECAY, {"LD_PRELOAD": jemalloc_path(), "MALLOC_CONF": "dirty_decay_ms:5000"}).split(";")
    assert before.startswith("(5000,") and kept == "False" and after == before
    assert _run_child(DECAY, {}) == "None;False;None"


def test_unreadable_maps_are_unknown(tmp_path):
    assert active_allocator(tmp_path / "missing") == "unknown"


def test_under_glibc_the_log_says_how_to_preload_jemalloc(monkeypatch, caplog):
    monkeypatch.setattr("rl.core.allocator.active_allocator", lambda: "glibc")
    with caplog.at_level(logging.WARNING, logger="rl.core.allocator"):
        log_allocator()
    assert f"LD_PRELOAD={jemalloc_path()}" in caplog.text


@pytest.mark.parametrize("allocator", ["jemalloc", "tcmalloc"])
def test_a_fast_allocator_is_only_noted(monkeypatch, caplog, allocator):
    monkeypatch.setattr("rl.core.allocator.active_allocator", lambda: allocator)
    with caplog.at_level(logging.INFO, logger="rl.core.allocator"):
        log_allocator()
    assert [r.levelname for r in caplog.records] == ["INFO"] and allocator in caplog.text


BOUND = ("from rl.core.allocator import bound_freed_pages, freed_bytes_kept, keep_freed_pages\n"
         "import ctypes\n"
         "keep_freed_pages()\n"
         "libc = ctypes.CDLL(None); libc.malloc.restype = ctypes.c_void_p; libc.free.argtypes = [ctypes.c_void_p]\n"
         "blocks = [libc.malloc(8 * 2**20) for _ in range(64)]\n"
         "for block in blocks: ctypes.memset(block, 1, 8 * 2**20)\n"
         "for block in blocks: libc.free(block)\n"
         "held = freed_bytes_kept()\n"
         "print(held, bound_freed_pages(limit=2**40), bound_freed_pages(limit=2**28), freed_bytes_kept(), sep=';')")


def test_freed_pages_kept_by_jemalloc_are_handed_back_past_their_limit():
    held, above_huge_limit, above_limit, after = _run_child(BOUND, {"LD_PRELOAD": jemalloc_path()}).split(";")
    assert int(held) >= 500 * 2**20, "512 MB freed with the decay off stay resident"
    assert (above_huge_limit, above_limit) == ("False", "True")
    assert int(after) < 2**28


def test_under_glibc_there_are_no_freed_pages_to_bound():
    assert _run_child(BOUND, {}) == "None;False;False;None"
