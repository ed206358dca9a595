"""The one way every taco config becomes JSON and comes back from it."""

from __future__ import annotations

import dataclasses
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
        unknown = set(values) - {field.name for field in dataclasses.fields(cls)}
        if unknown:
            raise ValueError(f"unknown {cls.__name__} fields: {sorted(unknown)}")
        return cls(**values)
