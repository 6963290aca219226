"""llama.cpp's OpenAI-compatible server (llama-cpp-python's `python -m llama_cpp.server`) as a child process on the
project's models file, restarted when the file changes: the server reads the file only when it starts, and
registration (rl/deploy/llama_cpp_registry.py) edits it. `manage.py serve_llama_cpp` runs it; tests, the demo and the
benchmarks use it the same way.

While it restarts (about a second for a small GGUF) requests are refused and serving answers 503; nothing is stored.
"""
from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from rl.deploy.llama_cpp_registry import ModelsFile

logger = logging.getLogger(__name__)


class EngineStartError(RuntimeError):
    pass


class LlamaCppServer:
    def __init__(self, models_file: str | Path, *, log_path: str | Path | None = None, ready_seconds: float = 120.0):
        self.models_file = ModelsFile(Path(models_file))
        self.log_path = Path(log_path) if log_path else None
        self.ready_seconds = ready_seconds
        self.process: subprocess.Popen | None = None
        self.started_digest = ""
        self.restarts = 0
        self._log: IO[Any] | None = None

    @property
    def url(self) -> str:
        content = self.models_file.read()
        return f"http://{content.get('host', '127.0.0.1')}:{content.get('port', 8080)}/v1"

    def digest(self) -> str:
        path = self.models_file.path
        return hashlib.sha256(path.read_bytes()).hexdigest() if path.exists() else ""

    def start(self) -> None:
        aliases = self.models_file.aliases()
        if not aliases:
            raise EngineStartError(f"{self.models_file.path} names no model yet: register a version first "
                                   "(RL_SERVING engine llama_cpp; export_model --register or activate_model).")
        self.started_digest = self.digest()
        if self.log_path is not None and self._log is None:
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
            self._log = open(self.log_path, "a", encoding="utf-8")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "llama_cpp.server", "--config_file", str(self.models_file.path)],
            stdout=self._log or subprocess.DEVNULL, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        self.wait_ready(set(aliases))
        logger.info("llama.cpp server at %s serves %s (pid %s)", self.url, ", ".join(sorted(aliases)), self.process.pid)

    def wait_ready(self, names: set[str]) -> None:
        """Until the server lists every one of `names` on /v1/models."""
        import httpx

        deadline = time.monotonic() + self.ready_seconds
        while time.monotonic() < deadline:
            process = self.process
            # A process that stop() ended is no longer self.process: a restart by the watcher is not a failure.
            if process is not None and process.poll() is not None and process is self.process:
                raise EngineStartError(f"llama.cpp's server exited with code {process.returncode} at start-up"
                                       f"{f'; see {self.log_path}' if self.log_path else ''}.")
            try:
                served = {m["id"] for m in httpx.get(f"{self.url}/models", timeout=2).json()["data"]}
                if names <= served:
                    return
            except (httpx.HTTPError, ValueError, KeyError):
                pass
            time.sleep(0.2)
        raise EngineStartError(f"llama.cpp's server at {self.url} did not serve {sorted(names)} within {self.ready_seconds:g} s.")

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

    def restart(self) -> None:
        self.stop()
        self.restarts += 1
        self.start()

    def changed(self) -> bool:
        return self.digest() != self.started_digest

    def watch(self, stop: threading.Event, poll_seconds: float = 1.0) -> None:
        """Until `stop` is set: start the server once the models file names a model, restart it whenever the file
        changes, and start it again when it died."""
        while not stop.wait(poll_seconds):
            if self.process is None:
                if self.models_file.aliases():
                    logger.info("%s names a model now: starting llama.cpp's server", self.models_file.path)
                    self.start()
            elif self.changed():
                logger.info("%s changed: restarting llama.cpp's server", self.models_file.path)
                self.restart()
            elif self.process.poll() is not None:
                logger.warning("llama.cpp's server exited with code %s: starting it again", self.process.returncode)
                self.restart()

    def serves(self, name: str) -> bool:
        """Whether the running server answers requests for `name` now."""
        import httpx

        try:
            return name in {m["id"] for m in httpx.get(f"{self.url}/models", timeout=2).json()["data"]}
        except (httpx.HTTPError, ValueError, KeyError):
            return False

    def __enter__(self) -> LlamaCppServer:
        self.start()
        return self

    @contextlib.contextmanager
    def watching(self, poll_seconds: float = 1.0) -> Iterator[LlamaCppServer]:
        """The server kept in step with its models file by a background thread (started once the file names a model)."""
        stop = threading.Event()
        watcher = threading.Thread(target=self.watch, args=(stop, poll_seconds), daemon=True, name="llama-cpp-watch")
        if self.models_file.aliases():
            self.start()
        watcher.start()
        try:
            yield self
        finally:
            stop.set()
            watcher.join()
            self.__exit__(None, None, None)

    def __exit__(self, *exc: object) -> None:
        self.stop()
        if self._log is not None:
            self._log.close()
            self._log = None
