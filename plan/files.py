"""User files (model configs, calibration YAML): read here, in the application layer, and
parsed by the library's parsers."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..hardware.catalog import Catalog, UnknownIdError
from ..hardware.efficiency import CalibrationSet, parse_calibration
from ..hardware.errors import SpecError
from ..hardware.llm import ModelArch, parse_model
from ..hardware.yamlio import load_yaml_text


def read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except OSError as err:
        raise SpecError(f"cannot read: {err.strerror}", file=str(path)) from None
    except UnicodeDecodeError:
        raise SpecError("not UTF-8 text", file=str(path)) from None


def load_yaml_file(path: Path) -> Any:
    """Read and safely parse a YAML file; errors name the file and line."""
    return load_yaml_text(read_text(path), str(path))


def load_model_file(path: Path) -> ModelArch:
    """A user's model: a Hugging Face config.json, or a YAML file in the catalog's format."""
    if path.suffix == ".json":
        try:
            data = json.loads(read_text(path))
        except json.JSONDecodeError as err:
            raise SpecError(f"malformed JSON: {err.msg}", file=str(path),
                            line=err.lineno) from None
        return parse_model(data, str(path), model_id=path.stem)
    return parse_model(load_yaml_file(path), str(path))


def is_model_file(catalog: Catalog, name: str) -> bool:
    """Whether `name` names a model file rather than a catalog id."""
    return name not in catalog.models and (name.endswith((".json", ".yaml", ".yml"))
                                           or "/" in name)


def model_of(catalog: Catalog, name: str) -> ModelArch:
    """A catalog model id, or a path to a config.json / model YAML."""
    if is_model_file(catalog, name):
        return load_model_file(Path(name))
    return catalog.model(name)


def load_calibration(catalog: Catalog, path: Path) -> CalibrationSet:
    """Efficiency parameters from `fleetplan calibrate` over the catalog's defaults; every
    accelerator it names must exist."""
    calibration = parse_calibration(load_yaml_file(path), str(path), base=catalog.calibration)
    for name in list(calibration.per_accelerator) + [k.split("@")[0]
                                                     for k in calibration.per_engine]:
        if name not in catalog.accelerators:
            raise SpecError(UnknownIdError("accelerators", name, catalog.accelerators).message,
                            file=str(path), field=f"accelerators.{name}")
    return calibration
