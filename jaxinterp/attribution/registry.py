"""The one table of attribution methods, read by the command line, the tests, the benchmark,
the evaluation script (and, later, the report and data-set runs)."""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

from jaxinterp.attribution import cams
from jaxinterp.attribution.cam import cam, grad_cam, guided_grad_cam
from jaxinterp.attribution.gradients import deconvnet, guided_backprop, input_x_gradient, saliency
from jaxinterp.attribution.noise import smooth_grad
from jaxinterp.attribution.pair import blur_ig, guided_ig, xrai
from jaxinterp.attribution.perturbation import integrated_gradients, occlusion
from jaxinterp.attribution.relevance import deeplift, lrp
from jaxinterp.attribution.transformers import attention_rollout, transformer_attribution
from jaxinterp.attribution.shapley import (feature_ablation, gradient_shap, kernel_shap, lime,
                                           shapley_sampling, shapley_values)


@dataclasses.dataclass(frozen=True)
class Method:
    """An attribution method and what a caller needs to know to run it generically.

    Attributes:
      name: public name (`ji.<name>`).
      fn: the function `(m, x, target, **options) -> array`.
      output: "pixels" (`[N, H, W, 3]`) or "map" (`[N, H, W]`).
      keyed: takes `key=` (random draws; deterministic given the key).
      chunked: takes `batch_size=` (the work multiplies; memory bounded by chunking).
      work: the option that sets how much work is multiplied ("samples", "steps", "window"), or
        None for single-pass methods.
      gap_only: needs a global-average-pool head (CAM).
      class_targets_only: refuses callable targets.
      transformer_only: reads attention layers (jaxinterp's ViT; a wrapped model through the
        function's `attention=`).
      defaults: the options a generic caller passes by default (the method's own defaults).
      summary: one line for help texts.
    """

    name: str
    fn: Callable
    output: str
    keyed: bool = False
    chunked: bool = False
    work: str | None = None
    gap_only: bool = False
    class_targets_only: bool = False
    transformer_only: bool = False
    defaults: dict = dataclasses.field(default_factory=dict)
    summary: str = ""

    def __call__(self, m, x, target, *, key=None, batch_size=None, **options) -> Any:
        """Runs the method, passing `key` / `batch_size` only where it takes them (and
        `batch_size` only when given: Score-CAM's default chunk is not "everything")."""
        kw = {**self.defaults, **options}
        if self.keyed and key is not None:
            kw["key"] = key
        if self.chunked and batch_size is not None:  # else the method's own default
            kw["batch_size"] = batch_size
        return self.fn(m, x, target, **kw)

    def supports(self, m) -> str | None:
        """None if the method applies to model `m`, else the reason it does not."""
        if self.gap_only and not hasattr(m, "specs"):
            return f"{self.name} needs jaxinterp's VGG with a global-average-pool head; " \
                   "use grad_cam on a wrapped model"
        if self.transformer_only:
            from jaxinterp.attribution.transformers import _vit_module

            if _vit_module(m) is None:
                return (f"{self.name} reads a vision transformer's attention; {m.arch} is not "
                        "jaxinterp's ViT (call it with attention=[...] for a wrapped one)")
            return None
        if self.gap_only and m.module.head != "gap":
            return f"{self.name} needs a global-average-pool head; {m.arch} has none (use grad_cam)"
        return None


METHODS: dict[str, Method] = {m.name: m for m in (
    Method("saliency", saliency, "pixels", summary="gradient of the score (Simonyan et al.)"),
    Method("input_x_gradient", input_x_gradient, "pixels", summary="input times gradient"),
    Method("deconvnet", deconvnet, "pixels", summary="DeconvNet backward rule"),
    Method("guided_backprop", guided_backprop, "pixels", summary="guided backpropagation"),
    Method("grad_cam", grad_cam, "map", summary="Grad-CAM at the last conv block"),
    Method("guided_grad_cam", guided_grad_cam, "pixels",
           summary="guided backprop times Grad-CAM"),
    Method("cam", cam, "map", gap_only=True, class_targets_only=True,
           summary="class activation map (GAP heads)"),
    Method("smooth_grad", smooth_grad, "pixels", keyed=True, chunked=True, work="samples",
           defaults={"samples": 50}, summary="SmoothGrad over the gradient"),
    Method("integrated_gradients", integrated_gradients, "pixels", chunked=True, work="steps",
           defaults={"steps": 50}, summary="integrated gradients (Gauss-Legendre)"),
    Method("occlusion", occlusion, "map", chunked=True, work="window",
           summary="occlusion sensitivity (Captum's definition, incremental)"),
    Method("deeplift", deeplift, "pixels",
           summary="DeepLIFT Rescale from a black baseline (Captum's rules, any model)"),
    Method("lrp", lrp, "pixels",
           summary="LRP, zennit's epsilon_plus_flat composite (any model)"),
    # the pytorch-grad-cam family, at the last conv block as grad_cam
    Method("grad_cam_plus_plus", cams.grad_cam_plus_plus, "map", summary="Grad-CAM++"),
    Method("xgrad_cam", cams.xgrad_cam, "map", summary="XGrad-CAM"),
    Method("layer_cam", cams.layer_cam, "map", summary="Layer-CAM: sum_c relu(g) A"),
    Method("hires_cam", cams.hires_cam, "map", summary="HiResCAM: sum_c g A"),
    Method("grad_cam_elementwise", cams.grad_cam_elementwise, "map",
           summary="element-wise Grad-CAM: sum_c relu(g A)"),
    Method("eigen_cam", cams.eigen_cam, "map",
           summary="Eigen-CAM: first principal component of the activations (class-agnostic)"),
    Method("eigen_grad_cam", cams.eigen_grad_cam, "map",
           summary="Eigen-Grad-CAM: first principal component of g A"),
    Method("score_cam", cams.score_cam, "map", chunked=True,
           summary="Score-CAM: a masked forward pass per channel"),
    Method("ablation_cam", cams.ablation_cam, "map", chunked=True,
           summary="Ablation-CAM: a forward pass per ablated channel"),
    Method("full_grad", cams.full_grad, "map",
           summary="FullGrad: |x dS/dx| plus |b dS/dz| of every conv / BatchNorm bias"),
    # Captum's perturbation and Shapley family over feature masks (default: an 8x8 grid)
    Method("feature_ablation", feature_ablation, "map", chunked=True, work="patch",
           summary="feature ablation on an 8x8 grid (Captum's FeatureAblation)"),
    Method("shapley_sampling", shapley_sampling, "map", keyed=True, chunked=True,
           work="samples", defaults={"samples": 25},
           summary="Shapley value sampling, 25 permutations (Captum)"),
    Method("shapley_values", shapley_values, "map", chunked=True, work="patch",
           summary="exact Shapley values on a 3x3 grid (Captum's ShapleyValues)"),
    Method("kernel_shap", kernel_shap, "map", keyed=True, chunked=True, work="samples",
           defaults={"samples": 25}, summary="KernelSHAP (Captum)"),
    Method("lime", lime, "map", keyed=True, chunked=True, work="samples",
           defaults={"samples": 25}, summary="LIME with Captum's defaults (Lasso 0.01)"),
    Method("gradient_shap", gradient_shap, "pixels", keyed=True, chunked=True, work="samples",
           defaults={"samples": 5}, summary="GradientSHAP, black baseline by default (Captum)"),
    # PAIR saliency's path methods and XRAI
    Method("guided_ig", guided_ig, "pixels", work="steps", defaults={"steps": 200},
           summary="Guided IG, PAIR's adaptive path (steps run one after another)"),
    Method("blur_ig", blur_ig, "pixels", chunked=True, work="steps", defaults={"steps": 100},
           summary="Blur IG: integrated gradients along a Gaussian-blur path (PAIR)"),
    Method("xrai", xrai, "map", chunked=True, work="steps", defaults={"steps": 100},
           summary="XRAI: IG regions (Felzenszwalb) ranked greedily (PAIR)"),
    # vision transformers
    Method("attention_rollout", attention_rollout, "map", transformer_only=True,
           summary="attention rollout (Abnar & Zuidema; class-independent)"),
    Method("transformer_attribution", transformer_attribution, "map", transformer_only=True,
           class_targets_only=True,
           summary="Chefer et al.'s relevance (CVPR 2021; variant='iccv2021')"),
)}


def get(name: str) -> Method:
    """The registered method `name`; unknown names list the valid ones."""
    if name not in METHODS:
        raise ValueError(f"unknown attribution method {name!r}; valid: {', '.join(METHODS)}")
    return METHODS[name]
