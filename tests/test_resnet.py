"""ResNet: torchvision import (.safetensors and .pth), logits and Captum parity on identical
weights; guided backprop / DeconvNet through the jaxpr rewrite (functional ReLUs)."""

import copy

import jax
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch")
captum_attr = pytest.importorskip("captum.attr")
safetensors_torch = pytest.importorskip("safetensors.torch")

import jaxinterp as ji  # noqa: E402
from test_attribution_parity import assert_close, nchw, to_nhwc  # noqa: E402
from torch_resnet import seeded_resnet  # noqa: E402
from torch_vgg import Normalized  # noqa: E402


@pytest.fixture(scope="session")
def pair(tmp_path_factory):
    net = seeded_resnet("resnet18", 0)
    d = tmp_path_factory.mktemp("resnet18")
    safetensors_torch.save_file(net.state_dict(), str(d / "w.safetensors"))
    jm = ji.import_weights(d / "w.safetensors", arch="resnet18")
    tm = Normalized(net, jm.preprocess.mean, jm.preprocess.std).eval()
    x = np.random.default_rng(0).random((2, 64, 64, 3), dtype=np.float32)
    logits = tm(nchw(x)).detach().numpy()
    target = np.argsort(-logits, 1)[:, 1].copy()  # the runner-up class
    return jm, tm, net, x, target, d


def test_import_and_logits_equal_torch(pair):
    jm, tm, net, x, target, d = pair
    theirs = tm(nchw(x)).detach().numpy()
    assert_close(jm(x)[0], theirs, 1e-5)
    torch.save(net.state_dict(), d / "w.pth")
    from_pth = ji.import_weights(d / "w.pth", arch="resnet18", out=d / "ckpt")
    np.testing.assert_array_equal(from_pth(x)[0], jm(x)[0])
    loaded = ji.load_model(d / "ckpt")  # orbax checkpoint round trip
    assert loaded.arch == "resnet18" and loaded.classes == jm.classes
    np.testing.assert_array_equal(loaded(x)[0], jm(x)[0])
    assert "layer4/1/conv2" in jm.layers and jm.resolve("layer4.1.conv2") == "layer4/1/conv2"
    with pytest.raises(ValueError, match="unknown layer 'layer5'.*layer4/1/conv2"):
        jm.resolve("layer5")
    state = {k: v for k, v in net.state_dict().items() if k != "layer3.1.bn2.running_var"}
    state["fc.weight"] = state["fc.weight"][:, :100].contiguous()
    safetensors_torch.save_file(state, str(d / "bad.safetensors"))
    with pytest.raises(ji.CheckpointError, match=r"(?s)missing batch_stats/layer3/1/bn2/var.*fc/kernel: file has \(100, 10\)"):
        ji.import_weights(d / "bad.safetensors", arch="resnet18")


def captum(pair, name):
    jm, tm, net, x, target, _ = pair
    t, inp = torch.from_numpy(target), nchw(x)
    if name in ("saliency", "input_x_gradient", "deconvnet", "guided_backprop"):
        cls = {"saliency": captum_attr.Saliency, "input_x_gradient": captum_attr.InputXGradient,
               "deconvnet": captum_attr.Deconvolution,
               "guided_backprop": captum_attr.GuidedBackprop}[name]
        kw = {"abs": False} if name == "saliency" else {}
        return to_nhwc(cls(tm).attribute(inp, target=t, **kw))
    if name == "grad_cam":
        a = captum_attr.LayerGradCam(tm, net.layer4).attribute(inp, target=t,
                                                                relu_attributions=True)
        return captum_attr.LayerAttribution.interpolate(a, x.shape[1:3], "bilinear")[:, 0] \
            .detach().numpy()
    if name == "guided_grad_cam":
        return to_nhwc(captum_attr.GuidedGradCam(tm, net.layer4).attribute(
            inp, target=t, interpolate_mode="bilinear"))
    if name == "occlusion":
        return captum_attr.Occlusion(tm).attribute(
            inp, target=t, sliding_window_shapes=(3, 16, 16), strides=(3, 16, 16),
            baselines=0.0)[:, 0].detach().numpy()
    raise KeyError(name)


def ours(pair, name):
    jm, _, _, x, target, _ = pair
    if name in ("grad_cam", "guided_grad_cam"):
        return getattr(ji, name)(jm, x, target, layer="layer4")
    if name == "occlusion":
        return ji.occlusion(jm, x, target, window=16, stride=16)
    return getattr(ji, name)(jm, x, target)


@pytest.mark.parametrize("name", ["saliency", "input_x_gradient", "deconvnet", "guided_backprop",
                                  "grad_cam", "guided_grad_cam", "occlusion"])
def test_parity_with_captum(pair, name):
    assert_close(ours(pair, name), captum(pair, name))


def test_integrated_gradients_parity_float64(pair):
    # float64 on both sides (see test_attribution_parity); one image at 32x32, 6 points: XLA:CPU
    # runs float64 convolutions far slower than float32
    jm, tm, _, x, target, _ = pair
    x, target = x[:1, :32, :32], target[:1]
    with jax.enable_x64(True):
        jm64 = jm.with_variables(jax.tree_util.tree_map(lambda v: jnp.asarray(v, jnp.float64),
                                                        jm.variables))
        ours = np.asarray(ji.integrated_gradients(jm64, x.astype(np.float64), target, steps=6))
    assert ours.dtype == np.float64
    theirs = to_nhwc(captum_attr.IntegratedGradients(copy.deepcopy(tm).double()).attribute(
        nchw(x.astype(np.float64)), target=torch.from_numpy(target), n_steps=6))
    assert_close(ours, theirs)
