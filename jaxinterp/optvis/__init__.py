"""Optimizing the input: the shared loop (`optimize`), parameterizations, transforms, objectives,
hooks, and feature visualization (`visualize`, Lucid's decomposition)."""

from jaxinterp.optvis import hooks, objectives, param, transforms
from jaxinterp.optvis.hooks import Yosinski, gaussian_blur
from jaxinterp.optvis.optimize import Optimized, features, optimize
from jaxinterp.optvis.render import Rendered, units, visualize, visualize_units

__all__ = ["Optimized", "Rendered", "Yosinski", "features", "gaussian_blur", "hooks", "objectives",
           "optimize", "param", "transforms", "units", "visualize", "visualize_units"]
