"""What the SIMULATED Ollama refuses, as a real server does: model names, blobs, Modelfile parameters, chat requests."""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any

KNOWN_PARAMETERS = {"stop": list, "temperature": (int, float), "num_ctx": int, "top_p": (int, float), "top_k": int, "seed": int}
MODEL_NAME = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9._\-/]*(:[a-zA-Z0-9._\-]+)?$")
CHAT_ROLES = {"system", "user", "assistant", "tool"}
CHAT_OPTIONS = {**KNOWN_PARAMETERS, "num_predict": int, "num_thread": int, "repeat_penalty": (int, float), "min_p": (int, float)}


def full_name(name: str) -> str:
    return name if ":" in name else f"{name}:latest"


def create_error(body: dict[str, Any], blobs: dict[str, Path]) -> str | None:
    """What a real server refuses in an /api/create request."""
    model, files = body.get("model"), body.get("files")
    if not isinstance(model, str) or not MODEL_NAME.match(model):
        return f"invalid model name {model!r}"
    if not isinstance(files, dict) or not files:
        return "files must name at least one uploaded blob"
    for filename, digest in files.items():
        if not isinstance(digest, str) or digest not in blobs:
            return f"blob {digest!r} for {filename!r} was never uploaded"
        with blobs[digest].open("rb") as handle:
            magic = handle.read(4)
        if magic != b"GGUF":
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
    return None


def chat_error(body: dict[str, Any], models: dict[str, Any]) -> tuple[int, str] | None:
    """What a real server refuses in a chat request, with its status."""
    name = body.get("model")
    if not isinstance(name, str) or not name:
        return 400, "model is required"
    if full_name(name) not in models:
        return 404, f"model '{name}' not found"
    messages = body.get("messages")
    if not isinstance(messages, list):
        return 400, "messages must be a list"
    for message in messages:
        if not isinstance(message, dict) or message.get("role") not in CHAT_ROLES or not isinstance(message.get("content", ""), str):
            return 400, f"invalid message {message!r}: role must be one of {sorted(CHAT_ROLES)} and content a string"
    fmt = body.get("format")
    if fmt not in (None, "", "json") and not (isinstance(fmt, dict) and fmt.get("type")):
        return 400, f"invalid format {fmt!r}: expected \"json\" or a JSON schema object"
    options = body.get("options") or {}
    if not isinstance(options, dict):
        return 400, "options must be an object"
    for key, value in options.items():
        if key in CHAT_OPTIONS and not isinstance(value, CHAT_OPTIONS[key]):
            return 400, f"option {key!r} has the wrong type"
    return None
