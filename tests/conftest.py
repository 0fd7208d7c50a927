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


# Modules whose costly module / session fixtures (a trained model, a dissection, a data-set run)
# would otherwise be built on both xdist workers: each runs whole on one worker. The other
# modules' tests are spread one by one, as pytest-xdist's default `load` does. (xdist's
# `--dist loadgroup` marks are lost under pytest 9: its nodeid suffix is no longer applied.)
ONE_WORKER = ("test_runs.py", "test_synthesis.py", "test_concepts.py", "test_adversarial.py",
              "test_optvis.py", "test_rules.py", "test_evaluation.py")


def pytest_xdist_make_scheduler(config, log):
    """pytest-xdist's scope scheduling with a module as the scope for ONE_WORKER and a single
    test as the scope for everything else (scopes with most tests are handed out first)."""
    if config.getvalue("dist") != "load":
        return None
    from xdist.scheduler import LoadScopeScheduling

    class OneWorkerModules(LoadScopeScheduling):
        def _split_scope(self, nodeid):
            path = nodeid.split("::", 1)[0]
            return path if path.rsplit("/", 1)[-1] in ONE_WORKER else nodeid

    return OneWorkerModules(config, log)
