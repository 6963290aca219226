"""An Ollama Modelfile whose TEMPLATE renders prompts exactly as the tokenizer's chat template does.

Ollama guesses templates only for models it knows; a fine-tuned GGUF without TEMPLATE and stop parameters answers
garbage or never stops. The template is chosen by the chat template's family and checked, before anything is
registered, by rendering it here and comparing with `tokenizer.apply_chat_template`, character for character.

`render_go_template` is a small interpreter for the subset of Go's text/template these templates use
(range over .Messages, if/else/end, .Role/.Content/.System fields, `-` whitespace trimming): there is no kept Python
library for Go templates.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rl.core.prompts import SYSTEM_PROMPT

DEFAULT_TEMPERATURE = 0.1


class TemplateError(ValueError):
    pass


@dataclass(frozen=True)
class ChatFormat:
    family: str
    template: str
    stops: tuple[str, ...]
    strip_prefix: str = ""  # text the runtime adds itself (a BOS token), left out of the template


CHATML = ChatFormat(
    "chatml",
    "{{- range .Messages }}<|im_start|>{{ .Role }}\n{{ .Content }}<|im_end|>\n{{ end }}<|im_start|>assistant\n",
    ("<|im_start|>", "<|im_end|>"),
)


LLAMA3 = ChatFormat(
    "llama3",
    "{{- range .Messages }}<|start_header_id|>{{ .Role }}<|end_header_id|>\n\n{{ .Content }}<|eot_id|>{{ end }}"
    "<|start_header_id|>assistant<|end_header_id|>\n\n",
    ("<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"),
    strip_prefix="<|begin_of_text|>",
)


def chat_format(tokenizer: Any, template_file: str | Path | None = None) -> ChatFormat:
    """The Ollama template for this tokenizer's chat template; `template_file` overrides an unknown one."""
    if template_file:
        text = Path(template_file).read_text(encoding="utf-8")
        return ChatFormat("custom", text, tuple(_guess_stops(tokenizer)))
    source = tokenizer.chat_template or ""
    if "<|im_start|>" in source:
        return CHATML
    if "<|start_header_id|>" in source:
        return LLAMA3
    raise TemplateError(
        "Unknown chat template family (neither ChatML nor Llama 3): write an Ollama TEMPLATE for it and pass --template-file."
    )


def _guess_stops(tokenizer: Any) -> list[str]:
    return [t for t in (tokenizer.eos_token, "<|im_end|>", "<|eot_id|>") if t and t in tokenizer.get_vocab()]


_ACTION = re.compile(r"\{\{(-?)\s*(.*?)\s*(-?)\}\}", re.DOTALL)


def _tokens(template: str) -> list[tuple[str, str]]:
    """('text', s) and ('action', s), with `{{-` / `-}}` trimming applied to neighbouring text."""
    parts: list[tuple[str, str]] = []
    position = 0
    trim_next = False
    for match in _ACTION.finditer(template):
        text = template[position : match.start()]
        if trim_next:
            text = text.lstrip()
        if match.group(1):
            text = text.rstrip()
        parts.append(("text", text))
        parts.append(("action", match.group(2)))
        trim_next = bool(match.group(3))
        position = match.end()
    tail = template[position:]
    parts.append(("text", tail.lstrip() if trim_next else tail))
    return parts


def _value(expression: str, scope: dict[str, Any]) -> Any:
    if not expression.startswith("."):
        raise TemplateError(f"Unsupported template expression {expression!r}")
    return scope.get(expression[1:], "")


def _render(parts: list[tuple[str, str]], index: int, scope: dict[str, Any], root: dict[str, Any], out: list[str], stop_at: tuple[str, ...]) -> tuple[int, str]:
    while index < len(parts):
        kind, value = parts[index]
        if kind == "text":
            out.append(value)
            index += 1
            continue
        head = value.split()[0] if value else ""
        if head in stop_at:
            return index, head
        if head == "range":
            items = _value(value.split(None, 1)[1], root if value.split(None, 1)[1] == ".Messages" else scope)
            body_start = index + 1
            end = body_start
            for item in items or [{}]:
                buffer: list[str] = []
                end, _ = _render(parts, body_start, {**item, "Role": item.get("role", ""), "Content": item.get("content", "")},
                                 root, buffer, ("end",))
                if items:
                    out.extend(buffer)
            index = end + 1
        elif head == "if":
            condition = bool(_value(value.split(None, 1)[1], scope if value.split(None, 1)[1] in (".Role", ".Content") else root))
            branch: list[str] = []
            end, stopped = _render(parts, index + 1, scope, root, branch, ("else", "end"))
            if condition:
                out.extend(branch)
            if stopped == "else":
                other: list[str] = []
                end, _ = _render(parts, end + 1, scope, root, other, ("end",))
                if not condition:
                    out.extend(other)
            index = end + 1
        else:
            out.append(str(_value(value, {**root, **scope})))
            index += 1
    return index, ""


def render_go_template(template: str, messages: list[dict[str, str]], system: str = "") -> str:
    """Render `template` as Ollama would for a chat request with `messages` (and the Modelfile's SYSTEM)."""
    root = {"Messages": messages, "System": system}
    out: list[str] = []
    _render(_tokens(template), 0, root, root, out, ())
    return "".join(out)


def template_parity(tokenizer: Any, fmt: ChatFormat, messages: list[dict[str, str]]) -> tuple[bool, str, str]:
    """Whether the Ollama template renders `messages` exactly as apply_chat_template does (with a generation prompt)."""
    expected = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    if fmt.strip_prefix and expected.startswith(fmt.strip_prefix):
        expected = expected[len(fmt.strip_prefix):]
    rendered = render_go_template(fmt.template, messages)
    return rendered == expected, rendered, expected


def modelfile_text(gguf_name: str, fmt: ChatFormat, *, system: str = SYSTEM_PROMPT, temperature: float = DEFAULT_TEMPERATURE) -> str:
    for text in (fmt.template, system):
        if '"""' in text:
            raise TemplateError('A Modelfile value cannot contain """.')
    lines = [f"FROM ./{gguf_name}", f'TEMPLATE """{fmt.template}"""', f'SYSTEM """{system}"""']
    lines += [f"PARAMETER stop {json.dumps(stop)}" for stop in fmt.stops]
    lines.append(f"PARAMETER temperature {temperature}")
    return "\n".join(lines) + "\n"


def ollama_parameters(fmt: ChatFormat, temperature: float = DEFAULT_TEMPERATURE) -> dict[str, Any]:
    """The same parameters as the Modelfile, in the shape of Ollama's /api/create."""
    return {"stop": list(fmt.stops), "temperature": temperature}
