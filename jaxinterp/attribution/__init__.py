"""Pixel attribution: gradients, CAMs, SmoothGrad family, integrated gradients, occlusion."""

from jaxinterp.attribution.cam import cam, default_layer, grad_cam, guided_grad_cam
from jaxinterp.attribution.gradients import deconvnet, guided_backprop, input_x_gradient, saliency
from jaxinterp.attribution.noise import smooth_grad
from jaxinterp.attribution.perturbation import integrated_gradients, occlusion

__all__ = ["cam", "deconvnet", "default_layer", "grad_cam", "guided_backprop", "guided_grad_cam",
           "input_x_gradient", "integrated_gradients", "occlusion", "saliency", "smooth_grad"]
