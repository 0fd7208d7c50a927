"""jaxinterp: neural-network interpretability for JAX and Flax."""

from jaxinterp import (adversarial, attribution, checks, concepts, data, evaluation, images,
                       metrics, optvis, relevance, rules, synthesis, targets, text, viz)
from jaxinterp.concepts import dissect, embed_2d, nearest_neighbors, tcav, top_activating
from jaxinterp.adversarial import fgsm, pgd, robustness
from jaxinterp._xla import compiler_options
from jaxinterp.attribution import (cam, deconvnet, deeplift, deeplift_shap, grad_cam,
                                   guided_backprop, guided_grad_cam, input_x_gradient,
                                   integrated_gradients, lrp, occlusion, saliency, smooth_grad)
from jaxinterp.attribution.shapley import (feature_ablation, gradient_shap, kernel_shap, lime,
                                           shapley_sampling, shapley_values)
from jaxinterp.attribution.cams import (ablation_cam, eigen_cam, eigen_grad_cam,
                                        grad_cam_elementwise, grad_cam_plus_plus, hires_cam,
                                        full_grad, layer_cam, score_cam, xgrad_cam)
from jaxinterp.attribution.pair import blur_ig, guided_ig, xrai
from jaxinterp.attribution.transformers import attention_rollout, transformer_attribution
from jaxinterp.optvis import Yosinski, objectives, optimize, visualize, visualize_units
from jaxinterp.synthesis import deepdream, gram, invert, style_transfer, texture
from jaxinterp.checks import check_images
from jaxinterp.model import Model, Preprocess, init_model
from jaxinterp.wrapped import Wrapped, wrap
from jaxinterp.runs import attribute_dataset, open_run
from jaxinterp.weights import (CheckpointError, import_weights, load_checkpoint, load_model,
                               save_model)

__version__ = "0.1.0"

__all__ = [
    "CheckpointError",
    "adversarial",
    "concepts",
    "dissect",
    "embed_2d",
    "nearest_neighbors",
    "tcav",
    "top_activating",
    "deepdream",
    "fgsm",
    "gram",
    "style_transfer",
    "texture",
    "invert",
    "optimize",
    "pgd",
    "robustness",
    "synthesis",
    "attribution",
    "checks",
    "cam",
    "compiler_options",
    "deconvnet",
    "ablation_cam",
    "eigen_cam",
    "eigen_grad_cam",
    "grad_cam_elementwise",
    "grad_cam_plus_plus",
    "hires_cam",
    "layer_cam",
    "score_cam",
    "xgrad_cam",
    "deeplift",
    "deeplift_shap",
    "feature_ablation",
    "full_grad",
    "blur_ig",
    "guided_ig",
    "xrai",
    "attention_rollout",
    "transformer_attribution",
    "gradient_shap",
    "kernel_shap",
    "lime",
    "shapley_sampling",
    "shapley_values",
    "lrp",
    "relevance",
    "evaluation",
    "metrics",
    "grad_cam",
    "guided_backprop",
    "guided_grad_cam",
    "images",
    "input_x_gradient",
    "integrated_gradients",
    "occlusion",
    "rules",
    "saliency",
    "smooth_grad",
    "targets",
    "text",
    "viz",
    "objectives",
    "optvis",
    "visualize",
    "visualize_units",
    "Yosinski",
    "Model",
    "Wrapped",
    "attribute_dataset",
    "open_run",
    "wrap",
    "Preprocess",
    "check_images",
    "data",
    "import_weights",
    "init_model",
    "load_checkpoint",
    "load_model",
    "save_model",
]
