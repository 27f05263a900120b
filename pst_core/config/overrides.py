"""A run's parameters as users give them: ``--set stage.param=value`` assignments, a config file
(YAML or JSON), a preset, a dict (a manifest row's overrides); merged in that order of precedence
over the defaults and validated as one ``PipelineConfig`` (``schema``). Every mistake is one line
naming the parameter, with a suggestion where a name is misspelt.
"""

from __future__ import annotations

import copy
import difflib
import json
import types
import typing
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from pst_core.config.presets import PRESETS
from pst_core.config.schema import SIDED_STAGES, SIDES, STAGE_MODELS, PipelineConfig, describe_validation_error
from pst_core.errors import ConfigError


def _parse_value(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        pass
    if text.lstrip().startswith(("{", "[")):  # YAML flow style too: {0: 1, 1: 0}
        import yaml

        try:
            return yaml.safe_load(text)
        except yaml.YAMLError:
            raise ConfigError(f"--set value {text!r}: not valid JSON or YAML") from None
    if "," in text:
        return [_parse_value(part.strip()) for part in text.split(",") if part.strip()]
    return text


def _type_options(annotation: Any) -> tuple:
    """The members of a union annotation (X | Y), or the annotation itself."""
    union = typing.get_origin(annotation) in (typing.Union, types.UnionType)
    return typing.get_args(annotation) if union else (annotation,)


def _is_text_field(annotation: Any) -> bool:
    """str or str | None: names and paths, taken as written."""
    options = set(_type_options(annotation))
    return str in options and options <= {str, type(None)}


def _is_list_field(annotation: Any) -> bool:
    return any(typing.get_origin(option) is list for option in _type_options(annotation))


def _suggest(name: str, choices: list[str]) -> str:
    hint = difflib.get_close_matches(name, choices, n=1)
    return f" (did you mean {hint[0]!r}?)" if hint else ""


def all_parameter_names() -> list[str]:
    names = [f"{stage}.{field}" for stage, model in STAGE_MODELS.items() for field in model.model_fields]
    return names + ["device"]


def set_parameter(raw: dict[str, Any], assignment: str) -> None:
    """Apply one ``[side.]stage.param=value`` to a raw config dict, checking the name."""
    if "=" not in assignment:
        raise ConfigError(f"--set {assignment!r}: expected stage.param=value")
    name, text = assignment.split("=", 1)
    name = name.strip()
    parts = name.split(".")
    side = None
    if parts[0] in SIDES:
        side, parts = parts[0], parts[1:]
    if parts == ["device"] and side is None:
        raw["device"] = text
        return
    if len(parts) != 2:
        raise ConfigError(f"--set {name!r}: expected stage.param or content|style.stage.param"
                          f"{_suggest(name, all_parameter_names())}")
    stage, param = parts
    if stage not in STAGE_MODELS:
        raise ConfigError(f"unknown stage {stage!r} in parameter {name!r}{_suggest(stage, list(STAGE_MODELS))}")
    fields = list(STAGE_MODELS[stage].model_fields)
    if param not in fields:
        raise ConfigError(f"unknown parameter {name!r}{_suggest(param, fields)}")
    if side is not None and stage not in SIDED_STAGES:
        raise ConfigError(f"parameter {name!r}: {stage} joins both images and has no per-side settings")
    target = raw.setdefault(side, {}).setdefault(stage, {}) if side else raw.setdefault(stage, {})
    annotation = STAGE_MODELS[stage].model_fields[param].annotation
    value = text if _is_text_field(annotation) else _parse_value(text)  # a file named 123 stays a name
    if isinstance(value, str) and _is_list_field(annotation):
        value = [value]  # a one-element list needs no comma: features.layers=relu3_1
    target[param] = value


def build_config(base: dict[str, Any] | None = None, sets: list[str] = (), config_file: str | None = None,
                 preset: str | None = None) -> PipelineConfig:
    """Defaults <- preset <- config file <- base dict <- ``--set`` assignments, validated as one model."""
    raw: dict[str, Any] = {}
    if preset:
        if preset not in PRESETS:
            raise ConfigError(f"--preset {preset!r}: unknown preset{_suggest(preset, list(PRESETS))} "
                              f"(have {', '.join(PRESETS)})")
        raw = _deep_merge(raw, PRESETS[preset])
    if config_file:
        raw = _deep_merge(raw, read_config_file(config_file))
    if base:
        raw = _deep_merge(raw, base)
    for assignment in sets:
        set_parameter(raw, assignment)
    return validate_config(raw)


def validate_config(raw: dict[str, Any] | PipelineConfig) -> PipelineConfig:
    if isinstance(raw, PipelineConfig):
        return raw
    _check_names(raw)
    try:
        return PipelineConfig.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(describe_validation_error(exc)) from None


def _check_names(raw: dict[str, Any], side: str | None = None) -> None:
    """Unknown names get a suggestion, rather than pydantic's generic 'extra inputs' message."""
    for stage, value in raw.items():
        prefix = f"{side}." if side else ""
        if side is None and stage in SIDES and isinstance(value, dict):
            _check_names(value, stage)
            continue
        if side is None and stage == "device":
            continue
        allowed = SIDED_STAGES if side else list(STAGE_MODELS)
        if stage not in allowed:
            raise ConfigError(f"unknown stage {prefix}{stage!r}{_suggest(stage, list(allowed))}")
        if isinstance(value, dict):
            fields = list(STAGE_MODELS[stage].model_fields)
            for param in value:
                if param not in fields:
                    raise ConfigError(f"unknown parameter {prefix}{stage}.{param!r}{_suggest(param, fields)}")


def read_config_file(path: str) -> dict[str, Any]:
    file = Path(path)
    if not file.is_file():
        raise ConfigError(f"--config {path}: no such file")
    text = file.read_text()
    try:
        if file.suffix.lower() in (".yaml", ".yml"):
            import yaml

            data = yaml.safe_load(text) or {}
        else:
            data = json.loads(text)
    except Exception as exc:
        raise ConfigError(f"--config {path}: cannot parse ({' '.join(str(exc).split())})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"--config {path}: expected a mapping of stage -> parameters")
    return data


def _deep_merge(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    """A new dict: b over a, recursively. Neither input is changed (presets are shared)."""
    out = copy.deepcopy(a)
    for key, value in b.items():
        out[key] = (_deep_merge(out[key], value) if isinstance(out.get(key), dict) and isinstance(value, dict)
                    else copy.deepcopy(value))
    return out
