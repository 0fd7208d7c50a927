"""Imports pytorch-grad-cam without torchvision.

pytorch-grad-cam (`pip install --no-deps grad-cam`) imports torchvision at import time:
`utils/model_targets.py` does `import torchvision` (for `torchvision.ops.box_iou`, used by the
Faster R-CNN target only) and `utils/image.py` does
`from torchvision.transforms import Compose, Normalize, ToTensor` (for `preprocess_image`
only). The test environment has no torchvision (it does not load with the CPU torch here), so
minimal stand-ins are put into `sys.modules` first; none of them is called by the CAM classes
the tests use. If a real torchvision is installed it is used as is. OpenCV and ttach are the
real packages (`opencv-python-headless`, `ttach`).
"""

import importlib.util
import sys
import types


def _unavailable(name):
    def stand_in(*args, **kwargs):
        raise NotImplementedError(f"{name} is a stand-in (tests/gradcam_shim.py): torchvision "
                                  "is not installed")

    stand_in.__name__ = name.rsplit(".", 1)[-1]
    return stand_in


def _install_torchvision_stub():
    """Registers stand-in `torchvision`, `torchvision.ops`, `torchvision.transforms` (and
    `torchvision.models.resnet`, what zennit_shim's stand-in has, so that either shim may run
    first) unless a real torchvision is importable or imported."""
    tv = sys.modules.get("torchvision")
    if tv is None:
        if importlib.util.find_spec("torchvision") is not None:
            return
        tv = types.ModuleType("torchvision")
        tv.__stub__ = True  # marks the stand-in
        sys.modules["torchvision"] = tv
    elif not getattr(tv, "__stub__", False):
        return  # a real torchvision
    if not hasattr(tv, "ops"):
        tv.ops = types.ModuleType("torchvision.ops")
        tv.ops.box_iou = _unavailable("torchvision.ops.box_iou")
    if not hasattr(tv, "transforms"):
        tv.transforms = types.ModuleType("torchvision.transforms")
        for name in ("Compose", "Normalize", "ToTensor", "Resize"):
            setattr(tv.transforms, name, _unavailable(f"torchvision.transforms.{name}"))
    if not hasattr(tv.transforms, "functional"):  # grad-cam >= 1.5.6: sess.py imports resize
        tv.transforms.functional = types.ModuleType("torchvision.transforms.functional")
        tv.transforms.functional.resize = _unavailable("torchvision.transforms.functional.resize")
    if not hasattr(tv, "models"):
        tv.models = types.ModuleType("torchvision.models")
        tv.models.resnet = types.ModuleType("torchvision.models.resnet")
        tv.models.resnet.Bottleneck = type("Bottleneck", (), {})  # placeholders (isinstance)
        tv.models.resnet.BasicBlock = type("BasicBlock", (), {})
    sys.modules.update({"torchvision.ops": tv.ops, "torchvision.transforms": tv.transforms,
                        "torchvision.transforms.functional": tv.transforms.functional,
                        "torchvision.models": tv.models,
                        "torchvision.models.resnet": tv.models.resnet})


def import_gradcam():
    """Returns the `pytorch_grad_cam` package, or raises ImportError if it (or one of its
    dependencies: ttach, opencv, scikit-learn, tqdm) is not installed."""
    for module, package in (("pytorch_grad_cam", "grad-cam"), ("ttach", "ttach"),
                            ("cv2", "opencv-python-headless"), ("sklearn", "scikit-learn"),
                            ("tqdm", "tqdm")):
        if importlib.util.find_spec(module) is None:
            raise ImportError(f"{module} is not installed (pip install --no-deps {package})")
    _install_torchvision_stub()
    try:
        import pytorch_grad_cam
        import pytorch_grad_cam.utils.model_targets
        import pytorch_grad_cam.utils.svd_on_activations
    except ImportError as e:  # installed, but it imports a name the stand-in lacks: fail loudly
        raise RuntimeError(f"grad-cam is installed but does not import with the torchvision "
                           f"stand-in (tests/gradcam_shim.py): {e}; add the name there") from e

    return pytorch_grad_cam
