"""The one way every taco config becomes JSON and comes back from it."""

from __future__ import annotations

import dataclasses
import types
import typing
from typing import TypeVar

Config = TypeVar("Config", bound="JsonConfig")


class JsonConfig:
    """Mixin for the frozen dataclass configs: plain JSON values out, unknown keys refused on the way in.

    Configs travel as plain dicts (store.json, config.json, checkpoints loaded with weights_only=True),
    never as pickled objects.
    """

    def to_dict(self) -> dict:
        values = dataclasses.asdict(self)
        # tuples become lists, as JSON would make them; __post_init__ turns them back where it matters
        return {name: list(value) if isinstance(value, tuple) else value for name, value in values.items()}

    @classmethod
    def from_dict(cls: type[Config], values: dict) -> Config:
        fields = {field.name: field for field in dataclasses.fields(cls)}
        unknown = set(values) - set(fields)
        if unknown:
            raise ValueError(f"unknown {cls.__name__} fields: {sorted(unknown)}")
        hints = typing.get_type_hints(cls)
        for name, value in values.items():
            # a value of another type would fail later, in arithmetic, with a traceback that names no field
            if not _fits(value, hints[name]):
                raise ValueError(f"{cls.__name__}.{name} must be {fields[name].type}, got {value!r}")
        return cls(**values)


def _fits(value, hint) -> bool:
    """Whether a JSON value fits a config field's annotation: int, float, bool, str, None, unions and tuples."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return any(_fits(value, option) for option in typing.get_args(hint))
    if typing.get_origin(hint) is tuple:
        return isinstance(value, (list, tuple)) and all(_fits(item, typing.get_args(hint)[0]) for item in value)
    if isinstance(value, bool):  # bool is an int subclass, but true is no number of steps
        return hint is bool
    if hint is float:
        return isinstance(value, (int, float))  # JSON has one number type: 1 is a fine 1.0
    return isinstance(value, hint)
