"""A loopback HTTP server that replays a RECORDED exchange (tests/recorded/*.json): each request must come in the
recorded order with the recorded method, path and JSON shape, and gets the recorded answer. Stands in for an engine
that cannot run here (vLLM); what it proves is the shape of what the project sends and how it reads the answers."""
from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

PLACEHOLDERS = {"<path>": str, "<list>": list, "<object>": dict}


def shape_mismatches(expected: Any, sent: Any, where: str = "$") -> list[str]:
    """Where `sent` differs from `expected` (placeholders match any value of their kind)."""
    if isinstance(expected, str) and expected in PLACEHOLDERS:
        return [] if isinstance(sent, PLACEHOLDERS[expected]) else [f"{where}: expected a {expected}, got {sent!r}"]
    if isinstance(expected, dict):
        if not isinstance(sent, dict):
            return [f"{where}: expected an object, got {sent!r}"]
        problems = [f"{where}: unexpected keys {sorted(set(sent) - set(expected))}"] if set(sent) - set(expected) else []
        for key, value in expected.items():
            problems += shape_mismatches(value, sent.get(key, "<missing>"), f"{where}.{key}") if key in sent else [f"{where}: missing {key}"]
        return problems
    return [] if expected == sent else [f"{where}: expected {expected!r}, got {sent!r}"]


class ReplayServer:
    def __init__(self, record: Path):
        self.exchanges = json.loads(Path(record).read_text())["exchanges"]
        self.position = 0
        self.problems: list[str] = []
        replay = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                self._answer(None)

            def do_POST(self) -> None:
                self._answer(json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"null"))

            def _answer(self, body: Any) -> None:
                if replay.position >= len(replay.exchanges):
                    replay.problems.append(f"unrecorded request {self.command} {self.path}")
                    self.send_response(500)
                    self.end_headers()
                    return
                exchange = replay.exchanges[replay.position]
                replay.position += 1
                expected = exchange["request"]
                if (self.command, self.path) != (expected["method"], expected["path"]):
                    replay.problems.append(f"request {replay.position}: {self.command} {self.path}, recorded {expected['method']} {expected['path']}")
                replay.problems += [f"request {replay.position}: {p}" for p in shape_mismatches(expected.get("json"), body)]
                answer = exchange["response"]
                payload = json.dumps(answer["json"]).encode() if "json" in answer else answer["text"].encode()
                self.send_response(answer["status"])
                self.send_header("Content-Type", "application/json" if "json" in answer else "text/plain")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    def __enter__(self) -> ReplayServer:
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
