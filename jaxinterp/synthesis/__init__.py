"""Image synthesis presets over `ji.optimize`: DeepDream, feature inversion, textures and style."""

from jaxinterp.synthesis.deepdream import Octave, deepdream, dream, octave_sizes, zoom
from jaxinterp.synthesis.inversion import Inverted, invert
from jaxinterp.synthesis.style import (NORMALIZATIONS, Stylized, content_layer, gram, style_layers,
                                       style_transfer, texture, texture_layers)

__all__ = ["Inverted", "NORMALIZATIONS", "Octave", "Stylized", "content_layer", "deepdream",
           "dream", "gram", "invert", "octave_sizes", "style_layers", "style_transfer", "texture",
           "texture_layers", "zoom"]
