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


def pytest_collection_modifyitems(items):
    """Parity cases on full-size VGG16 / VGG19 are `slow` (CI's second step runs them); their
    vgg-mini cases stay in the default run."""
    for item in items:
        if "[vgg16" in item.nodeid or "[vgg19" in item.nodeid:
            item.add_marker(pytest.mark.slow)
