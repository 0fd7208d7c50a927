"""Imports zennit without torchvision.

zennit imports `torchvision.models.resnet.{Bottleneck, BasicBlock}` at import time (for its
torchvision-specific canonizers, which these tests do not use). The test environment has no
torchvision, so a minimal stand-in is put into `sys.modules` first; if a real torchvision is
installed it is used as is.
"""

import importlib.util
import sys
import types


def _install_torchvision_stub():
    """Registers stand-in `torchvision`, `torchvision.models`, `torchvision.models.resnet` modules
    (with placeholder `Bottleneck` and `BasicBlock` classes) unless torchvision is importable."""
    if "torchvision" in sys.modules or importlib.util.find_spec("torchvision") is not None:
        return
    tv = types.ModuleType("torchvision")
    models = types.ModuleType("torchvision.models")
    resnet = types.ModuleType("torchvision.models.resnet")

    class Bottleneck:  # placeholders: only isinstance checks in zennit's ResNet canonizer
        pass

    class BasicBlock:
        pass

    resnet.Bottleneck, resnet.BasicBlock = Bottleneck, BasicBlock
    models.resnet = resnet
    tv.models = models
    tv.__stub__ = True  # marks the stand-in
    sys.modules.update({"torchvision": tv, "torchvision.models": models,
                        "torchvision.models.resnet": resnet})


def import_zennit():
    """Returns the `zennit` package (with `composites`, `attribution`, `canonizers` loaded), or
    raises ImportError if zennit is not installed."""
    if importlib.util.find_spec("zennit") is None:
        raise ImportError("zennit is not installed (pip install --no-deps zennit)")
    _install_torchvision_stub()
    try:
        import zennit
        import zennit.attribution
        import zennit.canonizers
        import zennit.composites
    except ImportError as e:  # installed, but it imports a name the stand-in lacks: fail loudly
        raise RuntimeError(f"zennit is installed but does not import with the torchvision "
                           f"stand-in (tests/gradcam_shim.py): {e}; add the name there") from e

    return zennit
