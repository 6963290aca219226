"""Flags generated from config dataclasses, so management commands and docs share one help text per field."""
from __future__ import annotations

import argparse
from dataclasses import MISSING, fields
from typing import Any

from rl.core.config import ConfigError, OnlineLearningConfig, config_field_help


def _help_text(text: str) -> str:
    """`text` as argparse help: argparse formats help with %, so a literal percent sign is doubled."""
    return text.replace("%", "%%")


def _parse_bool(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off"}:
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def add_config_flags(parser: argparse.ArgumentParser, config_class: type, *, title: str) -> None:
    """One `--field-name` flag per dataclass field; a flag left out keeps the preset's value."""
    group = parser.add_argument_group(title)
    for f in fields(config_class):
        flag = "--" + f.name.replace("_", "-")
        default = f.default if f.default is not MISSING else None
        kwargs: dict[str, Any] = {
            "dest": f"cfg_{f.name}", "default": None, "metavar": f.name.upper(),
            "help": _help_text(f"{f.metadata.get('help', '')} (base default: {default!r}; the preset may set another)"),
        }
        if f.metadata.get("choices"):
            kwargs["choices"] = f.metadata["choices"]
        if f.type in ("bool", bool):
            kwargs.update(type=_parse_bool, metavar="true|false")
        elif f.type in ("int", int):
            kwargs["type"] = int
        elif f.type in ("float", float):
            kwargs["type"] = float
        group.add_argument(flag, **kwargs)


def config_overrides(options: dict[str, Any]) -> dict[str, Any]:
    """The config fields the user set on the command line."""
    return {key.removeprefix("cfg_"): value for key, value in options.items() if key.startswith("cfg_") and value is not None}


def add_set_flag(parser: argparse.ArgumentParser, *, example: str, purpose: str = "") -> None:
    """`--set FIELD=VALUE` (repeatable): an online-learning setting overridden for one command; its help lists every
    field with the field's own help text."""
    fields_help = "; ".join(f"{name}: {text}" for name, text in config_field_help(OnlineLearningConfig).items())
    setting = f"an online-learning setting {purpose}".rstrip()
    parser.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                        help=_help_text(f"Override {setting}, e.g. --set {example}. Fields: {fields_help}"))


def parse_overrides(pairs: list[str]) -> dict:
    """`--set FIELD=VALUE` flags as online-learning setting overrides, each converted to its field's type."""
    overrides = {}
    types = {name: type(value) for name, value in OnlineLearningConfig().to_dict().items()}
    for pair in pairs:
        name, sep, text = pair.partition("=")
        if not sep or name not in types:
            raise ConfigError(f"--set expects FIELD=VALUE with a field of: {', '.join(types)}; got {pair!r}.")
        kind = types[name]
        try:
            overrides[name] = text.lower() in ("1", "true", "yes", "on") if kind is bool else kind(text)
        except ValueError as exc:
            raise ConfigError(f"--set {name}: expected a {kind.__name__}, got {text!r}.") from exc
    return overrides
