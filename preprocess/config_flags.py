"""absl flags generated from frozen dataclasses, so each setting is written once: its field.

A field becomes `--<prefix><name>` with the field's default, its `help` metadata and, for strings,
its `choices` metadata (an enum flag). A field whose type is another dataclass is flattened with
the prefix in its `flag_prefix` metadata (Config.head -> --head_epochs, --head_learning_rate...),
its `help` prefixed to theirs; `flag_exclude` metadata leaves some of its fields out, and
`flag=False` keeps a field off the command line. Lives in preprocess/, the lowest layer, so
the preprocessing and the pipeline entry points share it. Imports no TensorFlow.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any, Iterator

from absl import flags

NONE_WORDS = ("", "none")  # how an optional string flag says "no value" (--weights=none)


def field(default: Any, help: str, choices: tuple[str, ...] | None = None, **metadata) -> Any:
    """A dataclass field that carries its flag's help text (and choices)."""
    return dataclasses.field(default=default, metadata={"help": help, "choices": choices, **metadata})


@dataclasses.dataclass(frozen=True)
class _FlagField:
    flag: str  # the flag name
    path: tuple[str, ...]  # field names from the top dataclass down to this field
    kind: type  # bool, int, float, str or tuple (a tuple of floats)
    optional: bool
    default: Any
    help: str
    choices: tuple[str, ...] | None


def _fields(cls: type, prefix: str = "", path: tuple[str, ...] = (), exclude=(),
            defaults: Any = None, help_prefix: str = "") -> Iterator[_FlagField]:
    """The flags of `cls`; `defaults` is the instance whose values are the defaults (a nested
    field's default, e.g. Config.head's Phase), else each field's own default."""
    hints = typing.get_type_hints(cls)
    for item in dataclasses.fields(cls):
        if item.name in exclude or item.metadata.get("flag") is False:
            continue
        kind, optional = _kind(hints[item.name])
        if defaults is not None:
            default = getattr(defaults, item.name)
        elif item.default_factory is not dataclasses.MISSING:
            default = item.default_factory()
        else:
            default = item.default
        if dataclasses.is_dataclass(kind):
            yield from _fields(kind, prefix + item.metadata.get("flag_prefix", ""), (*path, item.name),
                               item.metadata.get("flag_exclude", ()), default,
                               help_prefix + item.metadata.get("help", ""))
            continue
        if "help" not in item.metadata or default is dataclasses.MISSING:
            raise TypeError(f"{cls.__name__}.{item.name}: a flag needs a default and help text "
                            "(config_flags.field), or metadata flag=False")
        yield _FlagField(prefix + item.name, (*path, item.name), kind, optional, default,
                         help_prefix + item.metadata["help"], item.metadata.get("choices"))


def _kind(annotation) -> tuple[type, bool]:
    """(base type, optional) of an annotation such as `int | None` or `tuple[float, ...]`."""
    args = typing.get_args(annotation)
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        inner = [arg for arg in args if arg is not type(None)]
        return _kind(inner[0])[0], True
    if typing.get_origin(annotation) is tuple:
        return tuple, False
    return annotation, False


def define(cls: type, flag_values: flags.FlagValues = flags.FLAGS, module_name: str | None = None) -> list[str]:
    """Defines one flag per (flattened) field of `cls`; returns their names. Flags that already
    exist are left alone (a second define of the same dataclass is a no-op)."""
    names = []
    for spec in _fields(cls):
        names.append(spec.flag)
        if spec.flag in flag_values:
            continue
        default = spec.default
        kwargs = dict(flag_values=flag_values, module_name=module_name)
        if spec.kind is bool:
            flags.DEFINE_bool(spec.flag, default, spec.help, **kwargs)
        elif spec.kind is int:
            flags.DEFINE_integer(spec.flag, default, spec.help, **kwargs)
        elif spec.kind is float:
            flags.DEFINE_float(spec.flag, default, spec.help, **kwargs)
        elif spec.kind is tuple:
            flags.DEFINE_list(spec.flag, [str(value) for value in default], spec.help, **kwargs)
        elif spec.choices:
            flags.DEFINE_enum(spec.flag, default, list(spec.choices), spec.help, **kwargs)
        else:
            flags.DEFINE_string(spec.flag, default, spec.help, **kwargs)
    return names


class FlagValueError(ValueError):
    """A flag value that does not convert to its field's type; the message names the flag."""


def build(cls: type, flag_values: flags.FlagValues = flags.FLAGS, **fixed) -> Any:
    """An instance of `cls` from the parsed flags; `fixed` sets top-level fields that are not
    flags (or overrides them)."""
    values = {spec.path: _convert(spec, flag_values[spec.flag].value)
              for spec in _fields(cls) if spec.path[0] not in fixed}
    return _assemble(cls, values, (), None, fixed)


def _convert(spec: _FlagField, value):
    if spec.kind is tuple:
        try:
            return tuple(float(item) for item in value or ())
        except ValueError:
            raise FlagValueError(f"--{spec.flag} must be comma-separated numbers, got {value}") from None
    if spec.optional and spec.kind is str and value is not None and value.strip().lower() in NONE_WORDS:
        return None
    return value


def _assemble(cls: type, values: dict, path: tuple[str, ...], defaults: Any, fixed: dict) -> Any:
    """`cls` from the flag values under `path`; fields without a flag keep `defaults`' value
    (the nested field's default instance) or their own default."""
    hints = typing.get_type_hints(cls)
    kwargs = dict(fixed)
    for item in dataclasses.fields(cls):
        key = (*path, item.name)
        if item.name in kwargs:
            continue
        kind, _ = _kind(hints[item.name])
        if key in values:
            kwargs[item.name] = values[key]
            continue
        default = getattr(defaults, item.name) if defaults is not None else (
            item.default_factory() if item.default_factory is not dataclasses.MISSING else item.default)
        if dataclasses.is_dataclass(kind) and default is not dataclasses.MISSING:
            kwargs[item.name] = _assemble(kind, values, key, default, {})
        elif default is not dataclasses.MISSING:
            kwargs[item.name] = default
    return cls(**kwargs)


def flag_names(cls: type) -> list[str]:
    return [spec.flag for spec in _fields(cls)]
