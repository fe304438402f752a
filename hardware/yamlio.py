"""Safe YAML that remembers the line of every mapping key, so errors can point at it."""

from __future__ import annotations

from typing import Any

import yaml

from .errors import SpecError

try:  # libyaml's parser, where PyYAML was built with it: the catalog loads ten times faster
    from yaml import CSafeLoader as _SafeLoader
except ImportError:  # pragma: no cover - PyYAML without libyaml
    from yaml import SafeLoader as _SafeLoader  # type: ignore[assignment]


class LineDict(dict[str, Any]):
    """A dict from YAML that knows the 1-based line of each of its keys (`lines`) and its own."""

    lines: dict[str, int]
    line: int | None

    def line_of(self, key: str) -> int | None:
        return self.lines.get(key, self.line)


class _LineLoader(_SafeLoader):
    """SafeLoader whose mappings are LineDicts; constructs nothing but plain data."""


def _construct_mapping(loader: _LineLoader, node: yaml.MappingNode) -> LineDict:
    loader.flatten_mapping(node)
    result = LineDict()
    result.lines = {}
    result.line = node.start_mark.line + 1
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        if not isinstance(key, str):
            key = str(key)
        if key in result:
            raise SpecError(f"duplicate key '{key}'", line=key_node.start_mark.line + 1,
                            field=key)
        result[key] = loader.construct_object(value_node, deep=True)
        result.lines[key] = key_node.start_mark.line + 1
    return result


_LineLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def load_yaml_text(text: str, file: str) -> Any:
    """Parse YAML text safely; syntax errors become SpecError with the line."""
    try:
        return yaml.load(text, Loader=_LineLoader)
    except SpecError as err:
        raise err.located(file=file) from None
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark or err.context_mark
        line = mark.line + 1 if mark is not None else None
        raise SpecError(f"malformed YAML: {err.problem or err.context}", file=file,
                        line=line) from None
    except yaml.YAMLError as err:
        raise SpecError(f"malformed YAML: {err}", file=file) from None
