"""Imports Quantus 0.6 without torchvision, and hands it the random draws jaxinterp uses.

Quantus itself never imports torchvision, but `import quantus` imports zennit (when installed),
which does; the test environment has no torchvision (it does not load with the CPU torch
here), so the stand-in of `gradcam_shim` is put into `sys.modules` first (shared, so either
shim may run first). If a real torchvision is installed it is used as is. Install:
`pip install --no-deps quantus==0.6.0 pandas` (Quantus' other dependencies, scipy,
scikit-image, scikit-learn, opencv, tqdm, matplotlib, are already there; `cachetools` is only
imported for TensorFlow models).

Quantus draws from NumPy's global generator inside its metrics. `draws` replaces one NumPy
random function, for the duration of a `with` block, by one that returns given arrays in
order, so Quantus and jaxinterp see identical draws.
"""

import contextlib
import importlib.util

import numpy as np

from gradcam_shim import _install_torchvision_stub


def import_quantus():
    """Returns the `quantus` package, or raises ImportError if it (or pandas, scikit-image,
    opencv) is not installed."""
    for module, package in (("quantus", "quantus==0.6.0"), ("pandas", "pandas"),
                            ("skimage", "scikit-image"), ("cv2", "opencv-python-headless"),
                            ("sklearn", "scikit-learn")):
        if importlib.util.find_spec(module) is None:
            raise ImportError(f"{module} is not installed (pip install --no-deps {package})")
    _install_torchvision_stub()
    try:
        import quantus
    except ImportError as e:  # installed, but it imports a name the stand-in lacks: fail loudly
        raise RuntimeError(f"quantus is installed but does not import with the torchvision "
                           f"stand-in (tests/gradcam_shim.py): {e}; add the name there") from e

    return quantus


@contextlib.contextmanager
def draws(name, values, check=None):
    """Within the block, `np.random.<name>(...)` returns the next of `values` (a list of
    arrays), after `check(*args, **kwargs)` (e.g. asserting the requested size); other NumPy
    random functions are untouched. Asserts at exit that every value was used."""
    original = getattr(np.random, name)
    queue = list(values)
    used = []

    def fake(*args, **kwargs):
        if check is not None:
            check(*args, **kwargs)
        assert queue, f"np.random.{name} called more often than the {len(values)} draws given"
        used.append(1)
        return np.array(queue.pop(0), copy=True)

    setattr(np.random, name, fake)
    try:
        yield
    finally:
        setattr(np.random, name, original)
    assert not queue, f"np.random.{name}: {len(queue)} of {len(values)} draws unused"


@contextlib.contextmanager
def numpy_trapz():
    """Quantus' `calculate_auc` calls `np.trapz`, removed in NumPy 2.4; within the block it is
    `np.trapezoid` (the same rule)."""
    had = hasattr(np, "trapz")
    if not had:
        np.trapz = np.trapezoid
    try:
        yield
    finally:
        if not had:
            del np.trapz
