"""How a TrainingConfig is read: YAML mappings and `--key=value` overrides, type-checked.

Dataclass sections nest (`--sandbox.workers=1`), every value is checked
against its field's type hint, an unknown key fails with the valid ones and a
close match, and keys renamed since a checkpoint was written still load under
their new name with one warning line.
"""

from __future__ import annotations

import dataclasses
import difflib
import logging
import os
import typing

import yaml

from training.errors import UserError

logger = logging.getLogger(__name__)


def read_yaml_mapping(path: str, what: str, shipped: str) -> dict:
    """The mapping a YAML file holds (empty file: {}); a missing, unparsable or non-mapping file is one UserError.

    `what` names the file in messages ("config file"), `shipped` says where the shipped ones are.
    """
    if not os.path.isfile(path):
        raise UserError(f"{what} {path} does not exist; see {shipped} for the shipped ones")
    try:
        with open(path) as f:
            data = yaml.safe_load(f) or {}
    except yaml.YAMLError as e:
        raise UserError(f"{what} {path} is not valid YAML: {str(e).splitlines()[0]}") from None
    if not isinstance(data, dict):
        raise UserError(f"{what} {path} must hold a mapping of keys to values")
    return data


def parse_override(arg: str) -> tuple[str, object]:
    body = arg[2:] if arg.startswith("--") else arg
    if "=" not in body:
        raise UserError(f"override {arg!r} must look like --key=value (e.g. --iterations_per_stage=4)")
    key, raw = body.split("=", 1)
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return key.strip(), value


def set_dotted(cls, data: dict, key: str, value) -> None:
    parts = key.split(".")
    node, node_cls = data, cls
    for i, part in enumerate(parts):
        names = {f.name: f for f in dataclasses.fields(node_cls)}
        if part not in names:
            _unknown_key(".".join(parts[: i + 1]), names, node_cls)
        if i == len(parts) - 1:
            node[part] = value
        else:
            sub = _field_type(node_cls, part)
            if not dataclasses.is_dataclass(sub):
                raise UserError(f"config key {'.'.join(parts[: i + 1])} is not a section; use --{part}=value")
            node, node_cls = node[part], sub


def _unknown_key(key: str, names, cls) -> typing.NoReturn:
    close = difflib.get_close_matches(key.split(".")[-1], list(names), n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    raise UserError(f"unknown config key {key!r}.{hint} Valid keys here: {', '.join(sorted(names))}")


def _field_type(cls, name: str):
    return typing.get_type_hints(cls)[name]


# Old names that checkpoints and configs written before a rename still use: old dotted key -> new.
RENAMED_KEYS = {
    "num_generated_tests": "test_samples",
    "warmup.discriminator_steps": "warmup.test_writer_steps",
}
# Old values of a key -> new: (dotted key, old value) -> new value.
RENAMED_VALUES = {("best_metric", "pass_rate"): "eval_pass_at_1"}


def renamed_key(full: str, source: str) -> str:
    new = RENAMED_KEYS.get(full)
    if new is not None:
        logger.warning("%s: config key %r is now %r; the old name still loads but will go", source, full, new)
        return new
    return full


def _renamed_value(full: str, value, source: str):
    new = RENAMED_VALUES.get((full, value)) if isinstance(value, str) else None
    if new is not None:
        logger.warning("%s: %s=%s is now %s=%s; the old value still loads but will go", source, full, value, full, new)
        return new
    return value


def build_kwargs(cls, data: dict, prefix: str, source: str) -> dict:
    names = {f.name for f in dataclasses.fields(cls)}
    kwargs = {}
    data = dict(data)
    for key in [k for k in data if prefix + k in RENAMED_KEYS]:
        new = renamed_key(prefix + key, source)[len(prefix):]
        value = data.pop(key)
        data.setdefault(new, value)  # a config that holds both names keeps the new one's value
    for key, value in data.items():
        full = prefix + key
        value = _renamed_value(full, value, source)
        if key not in names:
            _unknown_key(full, names, cls)
        kwargs[key] = _check_type(full, _field_type(cls, key), value, source)
    return kwargs


def _check_type(key: str, expected, value, source: str):
    if dataclasses.is_dataclass(expected):
        if isinstance(value, expected):
            return value
        if not isinstance(value, dict):
            raise UserError(f"{source}: {key} is a section; give it as a mapping or use dotted keys like --{key}.<name>=...")
        try:
            return expected(**build_kwargs(expected, value, key + ".", source))
        except ValueError as e:  # a section's own checks (the sandbox's limits) speak in ValueErrors
            raise UserError(f"{source}: {key}: {e}") from None
    origin = typing.get_origin(expected)
    if origin in (list, tuple):  # list[float], tuple[str, ...]: a list, each item checked
        if not isinstance(value, list if origin is list else (list, tuple)):
            raise UserError(f"{source}: {key} must be a list, got {value!r} ({type(value).__name__})")
        item = typing.get_args(expected)[0]
        return origin(_check_type(f"{key}[{i}]", item, v, source) for i, v in enumerate(value))
    members = typing.get_args(expected)
    if members:  # a union such as int | list: the first member the value fits
        for member in members:
            try:
                return _check_type(key, member, value, source)
            except UserError:
                continue
        names = " or ".join(getattr(m, "__name__", str(m)) for m in members)
        raise UserError(f"{source}: {key} must be {names}, got {value!r} ({type(value).__name__})")
    if expected is float and isinstance(value, str):
        try:  # YAML 1.1 reads 1e-4 (no dot) as a string
            value = float(value)
        except ValueError:
            pass
    ok = {
        bool: isinstance(value, bool),
        int: isinstance(value, int) and not isinstance(value, bool),
        float: isinstance(value, (int, float)) and not isinstance(value, bool),
        str: isinstance(value, str),
        list: isinstance(value, list),
    }.get(expected, True)
    if not ok:
        raise UserError(
            f"{source}: {key} must be {getattr(expected, '__name__', expected)}, got {value!r} ({type(value).__name__})"
        )
    return float(value) if expected is float else value
