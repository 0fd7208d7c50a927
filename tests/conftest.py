"""Shared fixtures: small models built once per session."""

import jax
import pytest

import jaxinterp as ji


@pytest.fixture(scope="session")
def mini():
    """vgg-mini with random weights (fast; no shipped checkpoint needed)."""
    return ji.load_model("vgg-mini", key=jax.random.key(1))


@pytest.fixture(scope="session")
def default_model():
    """The shipped, trained vgg-mini."""
    return ji.load_model()
