"""Feature visualization (Lucid's decomposition): parameterizations, transforms, objectives, render."""

from jaxinterp.optvis import objectives, param, transforms
from jaxinterp.optvis.render import Rendered, Yosinski, gaussian_blur, units, visualize, visualize_units

__all__ = ["Rendered", "Yosinski", "gaussian_blur", "objectives", "param", "transforms", "units",
           "visualize", "visualize_units"]
