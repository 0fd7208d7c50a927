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


# modules whose fixtures (a model run through every method, a data-set run, a dissection, torch
# twins) take 15-90 s: with `--dist loadgroup` each runs on one pytest worker, so those fixtures
# (and the programs they compile) are built once, not once per worker. The fixtures are
# session-scoped: a worker runs a group's tests between other modules' tests, where a
# module-scoped fixture would be torn down and built again (measured: the attribution table's
# 80 s fixture built twice on one worker)
ONE_WORKER = ("test_attribution", "test_runs", "test_concepts", "test_synthesis",
              "test_adversarial", "test_relevance_parity", "test_relevance", "test_optvis",
              "test_attribution_parity", "test_resnet", "test_cams")


def pytest_collection_modifyitems(items):
    """Parity cases on full-size VGG16 / VGG19 are `slow` (CI's second step runs them); their
    vgg-mini cases stay in the default run. The `ONE_WORKER` modules are xdist groups."""
    for item in items:
        if "[vgg16" in item.nodeid or "[vgg19" in item.nodeid:
            item.add_marker(pytest.mark.slow)
        module = item.nodeid.split("::")[0].rsplit("/", 1)[-1].removesuffix(".py")
        if module in ONE_WORKER:
            item.add_marker(pytest.mark.xdist_group(module))
