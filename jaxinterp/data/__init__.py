"""Data sets: `shapes`, the procedural concept data set with pixel labels."""

from jaxinterp.data.shapes_dataset import (CLASSES, COLOR_NAMES, SIZE, TEXTURES, Shapes,
                                           shapes)

__all__ = ["CLASSES", "COLOR_NAMES", "SIZE", "Shapes", "TEXTURES", "shapes"]
