"""Shared fixtures: the catalog, the packaged calibration data, a CLI runner."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import pytest
from fleetplan.hardware import Catalog, load_catalog
from typer.testing import CliRunner

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def catalog() -> Catalog:
    return load_catalog()


@pytest.fixture(scope="session")
def inference_csv() -> Path:
    return Path(str(resources.files("fleetplan").joinpath("catalog/calibration/inference.csv")))


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()
