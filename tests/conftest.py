"""Shared fixtures: small synthetic volumes and the location of the shared data."""

from __future__ import annotations

from pathlib import Path

import pytest
from synthetic import ellipsoid_volume

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture
def ellipsoid():
    return ellipsoid_volume()


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.exists():
        pytest.skip(f"shared data folder not found at {SHARED_DATA} (only CI and developers have it)")
    return SHARED_DATA


@pytest.fixture(scope="module")
def weights():
    """The shipped weights, loaded once per test module."""
    from napari_limnet.model import load_model

    return load_model()
