"""Shared fixtures: small models built once per session; a compilation cache shared by the
pytest-xdist workers and by CI's test steps."""

import os
import tempfile

import jax
import pytest

import jaxinterp as ji

# XLA programs compiled by one worker (or by the default step, for the slow step) are read back
# by the others instead of compiled again: the tests build many identical programs from
# different closures. JAXINTERP_TEST_XLA_CACHE names the directory ("" turns it off).
_CACHE = os.environ.get("JAXINTERP_TEST_XLA_CACHE",
                        os.path.join(tempfile.gettempdir(), f"jaxinterp-test-xla-{os.getuid()}"))
if _CACHE:
    jax.config.update("jax_compilation_cache_dir", _CACHE)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.3)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)


@pytest.fixture(scope="session")
def mini():
    """vgg-mini with random weights (fast; no shipped checkpoint needed)."""
    return ji.load_model("vgg-mini", key=jax.random.key(1))


@pytest.fixture(scope="session")
def default_model():
    """The shipped, trained vgg-mini."""
    return ji.load_model()


def pytest_configure(config):
    """The default run's programs are compiled with LLVM's optimization level 0: its tests are
    small and compile-bound (measured: the CAM / ground-truth modules 205 s -> 155 s). A run
    selecting `-m slow` (large models, execution-bound) keeps XLA's default. Runs before any
    test module starts JAX's backend; JAXINTERP_TEST_XLA_OPT=default keeps XLA's default
    everywhere."""
    if os.environ.get("JAXINTERP_TEST_XLA_OPT", "0") == "default":
        return
    if "slow" in (config.getoption("markexpr", "") or "").replace("not slow", ""):
        return
    flags = os.environ.get("XLA_FLAGS", "")
    if "xla_backend_optimization_level" not in flags:
        os.environ["XLA_FLAGS"] = f"{flags} --xla_backend_optimization_level=0".strip()


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
