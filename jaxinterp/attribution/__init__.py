"""Pixel attribution: gradients, CAMs, SmoothGrad family, integrated gradients, occlusion."""

from jaxinterp.attribution import cams, registry
from jaxinterp.attribution.cam import cam, grad_cam, guided_grad_cam
from jaxinterp.attribution.core import default_layer, rule_gradient
from jaxinterp.attribution.gradients import deconvnet, guided_backprop, input_x_gradient, saliency
from jaxinterp.attribution.noise import smooth_grad
from jaxinterp.attribution.perturbation import integrated_gradients, occlusion
from jaxinterp.attribution.relevance import deeplift, deeplift_shap, lrp
from jaxinterp.attribution.registry import METHODS, Method
from jaxinterp.attribution import feature_masks, pair, segments, transformers
from jaxinterp.attribution.cams import full_grad
from jaxinterp.attribution.pair import blur_ig, guided_ig, xrai
from jaxinterp.attribution.transformers import attention_rollout, transformer_attribution
from jaxinterp.attribution.shapley import (feature_ablation, gradient_shap, kernel_shap, lime,
                                           shapley_sampling, shapley_values)

__all__ = ["METHODS", "Method", "attention_rollout", "transformer_attribution", "transformers", "cam", "cams", "deconvnet", "deeplift", "deeplift_shap", "default_layer",
           "blur_ig", "feature_ablation", "feature_masks", "full_grad", "guided_ig", "pair",
           "segments", "xrai", "gradient_shap", "kernel_shap", "lime",
           "shapley_sampling", "shapley_values", "grad_cam",
           "guided_backprop", "guided_grad_cam", "input_x_gradient", "integrated_gradients", "lrp",
           "occlusion", "registry", "rule_gradient", "saliency", "smooth_grad"]
