"""Typed reads of fields from parsed YAML/JSON; each failure is a SpecError naming the file,
the line and the field."""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from typing import Any

from .errors import SpecError
from .units import UnitError, parse_quantity
from .yamlio import LineDict

_MISSING = object()
REQUIRED: Any = _MISSING
"""The default that makes a field required (for callers that compute defaults)."""


class Fields:
    """A view of one mapping of input data that knows where it came from."""

    def __init__(self, data: object, file: str, path: str = "") -> None:
        self.file = file
        self.path = path
        if not isinstance(data, Mapping):
            raise SpecError(f"expected a mapping, got {type(data).__name__}", file=file,
                            field=path or None, line=_line(data, None))
        self.data: Mapping[str, Any] = data

    def _name(self, key: str) -> str:
        return f"{self.path}.{key}" if self.path else key

    def line(self, key: str | None = None) -> int | None:
        return _line(self.data, key)

    def error(self, key: str | None, message: str) -> SpecError:
        field = self._name(key) if key else (self.path or None)
        return SpecError(message, file=self.file, field=field, line=self.line(key))

    def has(self, key: str) -> bool:
        return key in self.data and self.data[key] is not None

    def raw(self, key: str, default: Any = _MISSING) -> Any:
        if not self.has(key):
            if default is _MISSING:
                raise self.error(key, "is required")
            return default
        return self.data[key]

    def sub(self, key: str) -> Fields:
        return Fields(self.raw(key), self.file, self._name(key)) if self.has(key) else \
            self._raise_required(key)

    def sub_or_none(self, key: str) -> Fields | None:
        return self.sub(key) if self.has(key) else None

    def _raise_required(self, key: str) -> Fields:
        raise self.error(key, "is required")

    def items(self, key: str) -> list[Fields]:
        """A list of mappings."""
        value = self.raw(key)
        if not isinstance(value, list):
            raise self.error(key, f"expected a list, got {type(value).__name__}")
        return [Fields(item, self.file, f"{self._name(key)}[{i}]") for i, item in enumerate(value)]

    def string(self, key: str, default: Any = _MISSING) -> str:
        value = self.raw(key, default)
        if value is default and default is not _MISSING:
            return value  # type: ignore[no-any-return]
        if not isinstance(value, str) or not value.strip():
            raise self.error(key, f"expected a non-empty string, got {value!r}")
        return value

    def choice(self, key: str, allowed: tuple[str, ...], default: Any = _MISSING) -> str:
        value = self.string(key, default)
        if value not in allowed:
            raise self.error(key, f"must be one of {', '.join(allowed)}; got {value!r}")
        return value

    def number(self, key: str, default: Any = _MISSING, *, positive: bool = False,
               minimum: float | None = 0.0) -> float:
        value = self.raw(key, default)
        if value is default and default is not _MISSING:
            return value  # type: ignore[no-any-return]
        if isinstance(value, str):
            # YAML 1.1 reads 70.6e9 (no dot before the exponent sign) as a string.
            try:
                value = float(value.strip())
            except ValueError:
                raise self.error(key, f"expected a number, got {value!r}") from None
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise self.error(key, f"expected a number, got {value!r}")
        result = float(value)
        if not math.isfinite(result):
            raise self.error(key, f"must be finite, got {value!r}")
        if positive and result <= 0:
            raise self.error(key, f"must be positive, got {value!r}")
        if minimum is not None and result < minimum:
            raise self.error(key, f"must be >= {minimum:g}, got {value!r}")
        return result

    def integer(self, key: str, default: Any = _MISSING, *, minimum: int = 0) -> int:
        value = self.raw(key, default)
        if value is default and default is not _MISSING:
            return value  # type: ignore[no-any-return]
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.error(key, f"expected an integer, got {value!r}")
        if value < minimum:
            raise self.error(key, f"must be >= {minimum}, got {value!r}")
        return value

    def boolean(self, key: str, default: Any = _MISSING) -> bool:
        value = self.raw(key, default)
        if not isinstance(value, bool):
            raise self.error(key, f"expected true or false, got {value!r}")
        return value

    def quantity(self, key: str, dimension: str, default: Any = _MISSING, *,
                 positive: bool = True) -> float:
        """A "<number> <unit>" string converted to SI."""
        value = self.raw(key, default)
        if value is default and default is not _MISSING:
            return value  # type: ignore[no-any-return]
        try:
            result = parse_quantity(value, dimension)
        except UnitError as err:
            raise self.error(key, str(err)) from None
        if positive and result <= 0:
            raise self.error(key, f"must be positive, got {value!r}")
        return result

    def keys(self) -> list[str]:
        return [str(k) for k in self.data]

    def __iter__(self) -> Iterator[str]:
        return iter(self.keys())


def _line(data: object, key: str | None) -> int | None:
    if isinstance(data, LineDict):
        return data.line_of(key) if key is not None else data.line
    return None
