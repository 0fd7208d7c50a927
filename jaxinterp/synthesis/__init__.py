"""Image synthesis presets over `ji.optvis.optimize`: DeepDream and feature inversion."""

from jaxinterp.synthesis.deepdream import Octave, deepdream, dream, octave_sizes, zoom
from jaxinterp.synthesis.inversion import Inverted, invert

__all__ = ["Inverted", "Octave", "deepdream", "dream", "invert", "octave_sizes", "zoom"]
