"""A SIMULATED Ollama server (for tests and the demo): the parts of Ollama's HTTP API this project uses, on loopback.

It checks what the real server checks: blob digests (a body whose sha256 differs from the name is refused with 400),
that /api/create only names blobs that were uploaded, and the shapes of `template`, `system`, `parameters`, chat
`messages`, `format` and `options`. Blobs are kept in a temporary folder, models in memory.

`/api/chat` answers for real: it renders the messages with the model's TEMPLATE (Ollama's Go template, through
`rl.export.modelfile.render_go_template`; the Modelfile's SYSTEM is put first when the messages have no system message, as
Ollama does), runs the registered GGUF through llama.cpp, and with a JSON schema as `format` decodes under that
schema as a grammar (llama.cpp's JSON-schema grammar, as Ollama does). `temperature` 0 is greedy.

For tests of the client side, two knobs that a real server does not have: `chat_delay_seconds` (answer late, for
timeouts) and `answer_override` (a function of the request body whose text replaces the model's answer).
"""
from __future__ import annotations

import hashlib
import json
import re
import shutil
import tempfile
import threading
import time
from collections.abc import Callable
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from rl.simulated.checks import MODEL_NAME, chat_error, create_error, full_name

DEFAULT_TEMPERATURE = 0.8  # Ollama's, when neither the request nor the Modelfile sets one
DEFAULT_NUM_PREDICT = 256


class _QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        import sys

        if not isinstance(sys.exc_info()[1], (BrokenPipeError, ConnectionResetError)):  # a client that gave up waiting
            super().handle_error(request, client_address)


class SimulatedOllama:
    def __init__(self, port: int = 0, *, n_threads: int | None = None) -> None:
        self.blob_dir = Path(tempfile.mkdtemp(prefix="simulated-ollama-"))
        self.blobs: dict[str, Path] = {}
        self.models: dict[str, dict[str, Any]] = {}
        self.requests: list[tuple[str, str]] = []
        self.chats: list[dict[str, Any]] = []
        self.chat_delay_seconds = 0.0
        self.answer_override: Callable[[dict[str, Any]], str] | None = None
        self.n_threads = n_threads
        self._llamas: dict[str, Any] = {}
        self._llama_lock = threading.Lock()
        simulated = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _send(self, status: int, payload: Any = None, *, ndjson: list[dict] | None = None) -> None:
                if ndjson is not None:
                    body = b"".join(json.dumps(line).encode() + b"\n" for line in ndjson)
                else:
                    body = b"" if payload is None else json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/x-ndjson" if ndjson is not None else "application/json")
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
                if simulated.models.pop(full_name(body.get("model", "")), None) is None:
                    return self._send(404, {"error": f"model '{body.get('model')}' not found"})
                self._send(200)

            def do_POST(self) -> None:
                simulated.requests.append(("POST", self.path))
                blob = re.fullmatch(r"/api/blobs/(sha256:[0-9a-f]{64})", self.path)
                if blob:
                    data = self._body()
                    if "sha256:" + hashlib.sha256(data).hexdigest() != blob.group(1):
                        return self._send(400, {"error": "digest mismatch"})
                    path = simulated.blob_dir / blob.group(1).replace(":", "-")
                    path.write_bytes(data)
                    simulated.blobs[blob.group(1)] = path
                    return self._send(201)
                body = self._json()
                if body is None:
                    return
                if self.path == "/api/chat":
                    status, payload = simulated._chat(body)
                    if status == 200 and body.get("stream", True):
                        final = {**payload, "message": {"role": "assistant", "content": ""}}
                        return self._send(200, ndjson=[{**payload, "done": False, "done_reason": None}, final])
                    return self._send(status, payload)
                if self.path == "/api/create":
                    error = simulated._create(body)
                    return self._send(400, {"error": error}) if error else self._send(200, {"status": "success"})
                if self.path == "/api/show":
                    model = simulated.models.get(full_name(body.get("model", "")))
                    if model is None:
                        return self._send(404, {"error": f"model '{body.get('model')}' not found"})
                    parameters = "\n".join(f"{k} {json.dumps(v) if isinstance(v, str) else v}" for k, vs in model["parameters"].items()
                                           for v in (vs if isinstance(vs, list) else [vs]))
                    return self._send(200, {"template": model["template"], "system": model["system"], "parameters": parameters,
                                            "modelfile": f"FROM {model['digest']}", "details": {"format": "gguf"}, "model_info": {}})
                if self.path == "/api/copy":
                    source = simulated.models.get(full_name(body.get("source", "")))
                    if source is None:
                        return self._send(404, {"error": f"model '{body.get('source')}' not found"})
                    destination = body.get("destination")
                    if not isinstance(destination, str) or not MODEL_NAME.match(destination):
                        return self._send(400, {"error": f"invalid destination name {destination!r}"})
                    simulated.models[full_name(destination)] = dict(source)
                    return self._send(200)
                self._send(404, {"error": "not found"})

        self.server = _QuietServer(("127.0.0.1", port), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def _listing(self, name: str) -> dict[str, Any]:
        model = self.models[name]
        return {"name": name, "model": name, "modified_at": model["modified_at"], "size": self.blobs[model["digest"]].stat().st_size,
                "digest": model["digest"].removeprefix("sha256:"), "details": {"format": "gguf", "family": "llama"}}

    def _create(self, body: dict[str, Any]) -> str | None:
        error = create_error(body, self.blobs)
        if error is not None:
            return error
        model, files, parameters = body["model"], body["files"], body.get("parameters", {})
        self.models[full_name(model)] = {
            "digest": next(iter(files.values())), "template": body.get("template", ""), "system": body.get("system", ""),
            "parameters": parameters, "modified_at": datetime.now(timezone.utc).isoformat(),
        }
        return None

    def _llama(self, digest: str) -> Any:
        from llama_cpp import Llama

        if digest not in self._llamas:
            self._llamas[digest] = Llama(model_path=str(self.blobs[digest]), n_ctx=2048, n_threads=self.n_threads, verbose=False, seed=0)
        return self._llamas[digest]

    def _chat(self, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        from rl.export.modelfile import render_go_template

        refused = chat_error(body, self.models)
        if refused:
            return refused[0], {"error": refused[1]}
        name = full_name(body["model"])
        model = self.models[name]
        messages = [{"role": m["role"], "content": m.get("content", "")} for m in body["messages"]]
        if model["system"] and not any(m["role"] == "system" for m in messages):
            messages.insert(0, {"role": "system", "content": model["system"]})
        parameters, options = model["parameters"], body.get("options") or {}
        temperature = float(options.get("temperature", parameters.get("temperature", DEFAULT_TEMPERATURE)))
        stops = list(parameters.get("stop", [])) + list(options.get("stop", []))
        started = time.perf_counter()
        if self.chat_delay_seconds:
            time.sleep(self.chat_delay_seconds)
        prompt = render_go_template(model["template"], messages)
        with self._llama_lock:
            try:
                llm = self._llama(model["digest"])
            except (ValueError, RuntimeError) as exc:
                return 500, {"error": f"unable to load model: {exc}"}
            tokens = llm.tokenize(prompt.encode(), add_bos=True, special=True)
            if self.answer_override is not None:
                text, n_generated, reason = self.answer_override(body), 0, "stop"
            else:
                completion = llm.create_completion(
                    tokens, max_tokens=int(options.get("num_predict", DEFAULT_NUM_PREDICT)), temperature=temperature,
                    top_k=1 if temperature <= 0 else int(options.get("top_k", 40)), top_p=float(options.get("top_p", 0.9)),
                    min_p=0.0, repeat_penalty=1.0, stop=stops, seed=int(options.get("seed", 0)), grammar=self._grammar(body.get("format")),
                )
                choice = completion["choices"][0]
                text, n_generated = choice["text"], completion["usage"]["completion_tokens"]
                reason = "length" if choice["finish_reason"] == "length" else "stop"
        elapsed = int((time.perf_counter() - started) * 1e9)
        self.chats.append({"model": name, "prompt": prompt, "format": body.get("format"), "answer": text})
        return 200, {
            "model": body["model"], "created_at": datetime.now(timezone.utc).isoformat(),
            "message": {"role": "assistant", "content": text}, "done": True, "done_reason": reason,
            "total_duration": elapsed, "load_duration": 0, "prompt_eval_count": len(tokens), "eval_count": n_generated,
        }

    @staticmethod
    def _grammar(fmt: Any) -> Any:
        from llama_cpp import LlamaGrammar
        from llama_cpp.llama_grammar import JSON_GBNF

        if isinstance(fmt, dict):
            return LlamaGrammar.from_json_schema(json.dumps(fmt), verbose=False)
        if fmt == "json":
            return LlamaGrammar.from_string(JSON_GBNF, verbose=False)
        return None

    def __enter__(self) -> SimulatedOllama:
        self.thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.server.shutdown()
        self.server.server_close()
        self._llamas.clear()
        shutil.rmtree(self.blob_dir, ignore_errors=True)


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description="Serve the SIMULATED Ollama API on loopback until interrupted.")
    parser.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (0: any free port)")
    parser.add_argument("--seconds", type=float, default=600, help="stop after this long (bounded)")
    args = parser.parse_args()
    with SimulatedOllama(args.port) as simulated:
        print(f"simulated Ollama at {simulated.url}", flush=True)
        deadline = time.time() + args.seconds
        while time.time() < deadline:
            time.sleep(1)
