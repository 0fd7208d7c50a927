"""jaxinterp: neural-network interpretability for JAX and Flax."""

from jaxinterp import data
from jaxinterp.model import Model, Preprocess, check_images, init_model, load_model
from jaxinterp.weights import CheckpointError, import_weights, load_checkpoint, save_model

__version__ = "0.1.0"

__all__ = [
    "CheckpointError",
    "Model",
    "Preprocess",
    "check_images",
    "data",
    "import_weights",
    "init_model",
    "load_checkpoint",
    "load_model",
    "save_model",
]
