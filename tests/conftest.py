"""Shared fixtures: one Runner per fixture model for the whole session."""

from __future__ import annotations

import pytest

from fixture_models import GQA, MQA, load


@pytest.fixture(scope="session")
def gqa():
    return load(GQA)


@pytest.fixture(scope="session")
def mqa():
    return load(MQA)
