"""The one TOML loader and validator: TOML tables → dataclasses, one section at a time.

Every config file (training: liveduet/model/config.py; live settings: liveduet/live/settings.py)
is read by `load_toml` and each of its sections maps onto one dataclass through `parse_section`,
which rejects unknown keys and wrong types with a ConfigError naming the key and the value, then
runs the dataclass' own `validate()` for ranges. Ground floor: imports nothing of liveduet's but
its errors.
"""

from __future__ import annotations

import dataclasses
import tomllib
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

from liveduet.errors import ConfigError

T = TypeVar("T")

def _check_type(section: str, key: str, value: Any, hint: Any) -> Any:
    """The value if it fits the field's type (an int is a float; a bool is not an int), else ConfigError."""
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        allowed = typing.get_args(hint)
    else:
        allowed = (hint,)
    for t in allowed:
        if t is type(None) and value is None:
            return value
        if t is bool and isinstance(value, bool):
            return value
        if t is int and isinstance(value, int) and not isinstance(value, bool):
            return value
        if t is float and isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        if t is str and isinstance(value, str):
            return value
    names = " or ".join(getattr(t, "__name__", str(t)) for t in allowed)
    raise ConfigError(f"[{section}] {key} = {value!r}: must be {names}, not {type(value).__name__}")


def parse_section(section: str, table: Any, cls: type[T], forbidden: tuple[str, ...] = (), base: T | None = None) -> T:
    """One TOML table → a validated `cls` instance. Missing keys take the dataclass defaults, or
    `base`'s values when one is given."""
    if table is None:
        table = {}
    if not isinstance(table, dict):
        raise ConfigError(f"[{section}] must be a table, not {type(table).__name__}")
    hints = typing.get_type_hints(cls)
    fields = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    values = {}
    for key, value in table.items():
        if key not in fields or key in forbidden:
            allowed = ", ".join(sorted(fields - set(forbidden)))
            raise ConfigError(f"[{section}] unknown key {key!r} = {value!r} (known keys: {allowed})")
        values[key] = _check_type(section, key, value, hints[key])
    obj = dataclasses.replace(base, **values) if base is not None else cls(**values)
    validate = getattr(obj, "validate", None)
    if validate is not None:
        validate()
    return obj


def load_toml(path: str | Path) -> dict:
    path = Path(path)
    try:
        with path.open("rb") as f:
            return tomllib.load(f)
    except FileNotFoundError as err:
        raise ConfigError(f"config file {path} does not exist") from err
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"{path} is not valid TOML: {err}") from err
    except UnicodeDecodeError as err:
        raise ConfigError(f"{path} is not a TOML text file (not UTF-8 at byte {err.start})") from err
    except IsADirectoryError as err:
        raise ConfigError(f"{path} is a folder, not a config file") from err
    except OSError as err:
        raise ConfigError(f"cannot read config {path}: {err.strerror or err}") from err


def check_sections(data: dict, known: tuple[str, ...], path: str | Path) -> None:
    """Refuse top-level sections nobody reads (a typo like [trian] would be silently ignored)."""
    for key in data:
        if key not in known:
            raise ConfigError(f"{path}: unknown section [{key}] (known: {', '.join(known)})")
