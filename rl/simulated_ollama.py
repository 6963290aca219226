"""A SIMULATED Ollama server (for tests and the demo): the parts of Ollama's HTTP API this project uses, on loopback.

It checks what the real server checks: blob digests (a body whose sha256 differs from the name is refused with 400),
that /api/create only names blobs that were uploaded, and the shapes of `template`, `system` and `parameters`.
It stores nothing but in memory and runs no model.
"""
from __future__ import annotations

import hashlib
import json
import re
import threading
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

KNOWN_PARAMETERS = {"stop": list, "temperature": (int, float), "num_ctx": int, "top_p": (int, float), "top_k": int, "seed": int}
MODEL_NAME = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9._\-/]*(:[a-zA-Z0-9._\-]+)?$")


class SimulatedOllama:
    def __init__(self, port: int = 0) -> None:
        self.blobs: dict[str, bytes] = {}
        self.models: dict[str, dict[str, Any]] = {}
        self.requests: list[tuple[str, str]] = []
        simulated = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _send(self, status: int, payload: Any = None) -> None:
                body = b"" if payload is None else json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)

            def _body(self) -> bytes:
                length = int(self.headers.get("Content-Length") or 0)
                if length:
                    return self.rfile.read(length)
                if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                    chunks = []
                    while True:
                        size = int(self.rfile.readline().strip(), 16)
                        if size == 0:
                            self.rfile.readline()
                            return b"".join(chunks)
                        chunks.append(self.rfile.read(size))
                        self.rfile.readline()
                return b""

            def _json(self) -> dict[str, Any] | None:
                try:
                    value = json.loads(self._body() or b"{}")
                except json.JSONDecodeError:
                    self._send(400, {"error": "invalid JSON"})
                    return None
                if not isinstance(value, dict):
                    self._send(400, {"error": "expected a JSON object"})
                    return None
                return value

            def do_HEAD(self) -> None:
                simulated.requests.append(("HEAD", self.path))
                match = re.fullmatch(r"/api/blobs/(sha256:[0-9a-f]{64})", self.path)
                self._send(200 if match and match.group(1) in simulated.blobs else 404)

            def do_GET(self) -> None:
                simulated.requests.append(("GET", self.path))
                if self.path == "/api/tags":
                    self._send(200, {"models": [simulated._listing(name) for name in sorted(simulated.models)]})
                else:
                    self._send(404, {"error": "not found"})

            def do_DELETE(self) -> None:
                simulated.requests.append(("DELETE", self.path))
                body = self._json()
                if body is None:
                    return
                if self.path != "/api/delete":
                    return self._send(404, {"error": "not found"})
                if simulated.models.pop(simulated._full(body.get("model", "")), None) is None:
                    return self._send(404, {"error": f"model '{body.get('model')}' not found"})
                self._send(200)

            def do_POST(self) -> None:
                simulated.requests.append(("POST", self.path))
                blob = re.fullmatch(r"/api/blobs/(sha256:[0-9a-f]{64})", self.path)
                if blob:
                    data = self._body()
                    if "sha256:" + hashlib.sha256(data).hexdigest() != blob.group(1):
                        return self._send(400, {"error": "digest mismatch"})
                    simulated.blobs[blob.group(1)] = data
                    return self._send(201)
                body = self._json()
                if body is None:
                    return
                if self.path == "/api/create":
                    error = simulated._create(body)
                    return self._send(400, {"error": error}) if error else self._send(200, {"status": "success"})
                if self.path == "/api/show":
                    model = simulated.models.get(simulated._full(body.get("model", "")))
                    if model is None:
                        return self._send(404, {"error": f"model '{body.get('model')}' not found"})
                    parameters = "\n".join(f"{k} {json.dumps(v) if isinstance(v, str) else v}" for k, vs in model["parameters"].items()
                                           for v in (vs if isinstance(vs, list) else [vs]))
                    return self._send(200, {"template": model["template"], "system": model["system"], "parameters": parameters,
                                            "modelfile": f"FROM {model['digest']}", "details": {"format": "gguf"}, "model_info": {}})
                if self.path == "/api/copy":
                    source = simulated.models.get(simulated._full(body.get("source", "")))
                    if source is None:
                        return self._send(404, {"error": f"model '{body.get('source')}' not found"})
                    destination = body.get("destination")
                    if not isinstance(destination, str) or not MODEL_NAME.match(destination):
                        return self._send(400, {"error": f"invalid destination name {destination!r}"})
                    simulated.models[simulated._full(destination)] = dict(source)
                    return self._send(200)
                self._send(404, {"error": "not found"})

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @staticmethod
    def _full(name: str) -> str:
        return name if ":" in name else f"{name}:latest"

    def _listing(self, name: str) -> dict[str, Any]:
        model = self.models[name]
        return {"name": name, "model": name, "modified_at": model["modified_at"], "size": len(self.blobs[model["digest"]]),
                "digest": model["digest"].removeprefix("sha256:"), "details": {"format": "gguf", "family": "llama"}}

    def _create(self, body: dict[str, Any]) -> str | None:
        model, files = body.get("model"), body.get("files")
        if not isinstance(model, str) or not MODEL_NAME.match(model):
            return f"invalid model name {model!r}"
        if not isinstance(files, dict) or not files:
            return "files must name at least one uploaded blob"
        for filename, digest in files.items():
            if not isinstance(digest, str) or digest not in self.blobs:
                return f"blob {digest!r} for {filename!r} was never uploaded"
            if not self.blobs[digest].startswith(b"GGUF"):
                return f"{filename!r} is not a GGUF file"
        for key in ("template", "system"):
            if key in body and not isinstance(body[key], str):
                return f"{key} must be a string"
        parameters = body.get("parameters", {})
        if not isinstance(parameters, dict):
            return "parameters must be an object"
        for key, value in parameters.items():
            if key not in KNOWN_PARAMETERS:
                return f"unknown parameter {key!r}"
            if not isinstance(value, KNOWN_PARAMETERS[key]) or (key == "stop" and not all(isinstance(s, str) for s in value)):
                return f"parameter {key!r} has the wrong type"
        self.models[self._full(model)] = {
            "digest": next(iter(files.values())), "template": body.get("template", ""), "system": body.get("system", ""),
            "parameters": parameters, "modified_at": datetime.now(timezone.utc).isoformat(),
        }
        return None

    def __enter__(self) -> SimulatedOllama:
        self.thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.server.shutdown()
        self.server.server_close()


if __name__ == "__main__":
    import argparse
    import time

    parser = argparse.ArgumentParser(description="Serve the SIMULATED Ollama API on loopback until interrupted.")
    parser.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (0: any free port)")
    parser.add_argument("--seconds", type=float, default=600, help="stop after this long (bounded)")
    args = parser.parse_args()
    with SimulatedOllama(args.port) as simulated:
        print(f"simulated Ollama at {simulated.url}", flush=True)
        deadline = time.time() + args.seconds
        while time.time() < deadline:
            time.sleep(1)
