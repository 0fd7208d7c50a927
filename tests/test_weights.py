"""Weight import: parity with a plain-torch VGG (torchvision layout) on identical weights."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")
safetensors_torch = pytest.importorskip("safetensors.torch")
h5py = pytest.importorskip("h5py")

import jaxinterp as ji  # noqa: E402
from jaxinterp.model import CAFFE  # noqa: E402
from torch_vgg import seeded_vgg  # noqa: E402

SIZES = [(224, 224), (160, 128)]


def torch_model(arch, seed, **kw):
    return seeded_vgg(arch, seed, **kw)


def images(n, h, w, seed=0):
    return np.random.default_rng(seed).random((n, h, w, 3), dtype=np.float32)


def assert_feats_match(jm, tm, x_nhwc, torch_input):
    with torch.no_grad():
        t_logits, t_feats = tm(torch.from_numpy(torch_input).permute(0, 3, 1, 2))
    logits, feats = jm(x_nhwc)
    checked = 0
    for name, t in t_feats.items():
        t = t.numpy()
        t = t.transpose(0, 2, 3, 1) if t.ndim == 4 else t
        j = np.asarray(feats[name])
        assert j.shape == t.shape, name
        scale = np.abs(t).max()
        assert scale > 0, name
        err = np.abs(j - t).max() / scale
        assert err < 1e-4, f"{name}: max error {err:.2e} of the largest magnitude"
        checked += 1
    assert checked == len(jm.layers)
    np.testing.assert_allclose(logits, t_logits.numpy(), atol=1e-4 * np.abs(t_logits.numpy()).max())


@pytest.fixture(scope="session", params=["vgg16", "vgg19"])
def torch_files(request, tmp_path_factory):
    arch = request.param
    tm = torch_model(arch, seed=1)
    d = tmp_path_factory.mktemp(arch)
    state = tm.state_dict()
    torch.save(state, d / f"{arch}.pth")
    safetensors_torch.save_file({k: v.contiguous() for k, v in state.items()},
                                str(d / f"{arch}.safetensors"))
    return arch, tm, d


def torchvision_input(x):
    return ((x - np.array([0.485, 0.456, 0.406], np.float32))
            / np.array([0.229, 0.224, 0.225], np.float32))


@pytest.mark.parametrize("route", ["pth", "safetensors"])
def test_torch_parity(torch_files, route, tmp_path):
    arch, tm, d = torch_files
    if arch != "vgg16" and route == "pth":
        pytest.skip("the file format is read by the same code for every architecture")
    jm = ji.import_weights(d / f"{arch}.{route}", arch=arch, out=tmp_path / "ck")
    jm = ji.load_model(str(tmp_path / "ck"))  # through the orbax checkpoint
    assert jm.meta.extra["source"]["format"] == {"pth": "torch"}.get(route, route)
    assert jm.classes[0] == "tench" and len(jm.classes) == 1000
    for h, w in SIZES:
        x = images(1, h, w)
        assert_feats_match(jm, tm, x, torchvision_input(x))


def keras_h5(tm, path, layout="legacy"):
    """Writes `tm`'s weights as Keras's VGG h5 (block1_conv1 … predictions; HWIO; HWC flatten)."""
    sd = {k: v.numpy() for k, v in tm.state_dict().items()}
    convs = [i for i, mod in enumerate(tm.features) if isinstance(mod, torch.nn.Conv2d)]
    b, c, prev = 1, 0, 0
    layers = {}
    for i in convs:
        if any(isinstance(tm.features[j], torch.nn.MaxPool2d) for j in range(prev, i)):
            b, c = b + 1, 0
        c += 1
        prev = i
        layers[f"block{b}_conv{c}"] = (sd[f"features.{i}.weight"].transpose(2, 3, 1, 0),
                                       sd[f"features.{i}.bias"])
    w0 = sd["classifier.0.weight"]  # [4096, C*7*7] in (C, H, W) order -> Keras (H, W, C) rows
    c = w0.shape[1] // 49
    layers["fc1"] = (w0.reshape(-1, c, 7, 7).transpose(2, 3, 1, 0).reshape(49 * c, -1),
                     sd["classifier.0.bias"])
    layers["fc2"] = (sd["classifier.3.weight"].T, sd["classifier.3.bias"])
    layers["predictions"] = (sd["classifier.6.weight"].T, sd["classifier.6.bias"])
    with h5py.File(path, "w") as f:
        if layout == "keras3":  # Keras 3 `.weights.h5`: layers/<name>/vars/{0, 1}
            for name, (k, bias) in layers.items():
                v = f.create_group(f"layers/{name}/vars")
                v.create_dataset("0", data=k)
                v.create_dataset("1", data=bias)
            f.create_group("layers/flatten/vars")
            return
        root = f.create_group("model_weights") if layout == "full" else f  # full model: + config
        if layout == "full":
            f.attrs["model_config"] = b'{"class_name": "Functional"}'
        root.attrs["layer_names"] = [n.encode() for n in ["input_1", *layers, "flatten"]]
        root.create_group("input_1").attrs["weight_names"] = []
        root.create_group("flatten").attrs["weight_names"] = []
        for name, (k, bias) in layers.items():
            g = root.create_group(name)
            g.attrs["weight_names"] = [f"{name}/kernel:0".encode(), f"{name}/bias:0".encode()]
            g.create_dataset(f"{name}/kernel:0", data=k)
            g.create_dataset(f"{name}/bias:0", data=bias)


@pytest.mark.parametrize("layout", ["legacy", "full", "keras3"])
def test_keras_h5_parity(torch_files, tmp_path, layout):
    arch, tm, _ = torch_files
    if arch != "vgg16" and layout != "legacy":
        pytest.skip("the layouts differ in the file only: one architecture suffices")
    keras_h5(tm, tmp_path / "vgg.h5", layout)
    jm = ji.import_weights(tmp_path / "vgg.h5", arch=arch)
    assert jm.preprocess == CAFFE
    x = images(1, 224, 224, seed=2)
    caffe = x[..., ::-1] * 255.0 - np.array([103.939, 116.779, 123.68], np.float32)
    assert_feats_match(jm, tm, x, np.ascontiguousarray(caffe))


# ---------------------------------------------------------------- bad files (vgg-mini: fast)


@pytest.fixture(scope="session")
def mini_torch(tmp_path_factory):
    tm = torch_model("vgg-mini", seed=3, num_classes=8, batch_norm=True)
    d = tmp_path_factory.mktemp("mini")
    torch.save(tm.state_dict(), d / "mini.pth")
    safetensors_torch.save_file(tm.state_dict(), str(d / "mini.safetensors"))
    return tm, d


def test_mini_bn_parity(mini_torch):
    tm, d = mini_torch
    jm = ji.import_weights(d / "mini.safetensors", arch="vgg-mini")
    x = images(2, 64, 64, seed=4)
    assert_feats_match(jm, tm, x, (x - 0.5) / 0.25)


def test_mismatched_shapes_listed_and_nothing_written(mini_torch, tmp_path):
    tm, _ = mini_torch
    sd = dict(tm.state_dict())
    sd["features.4.weight"] = torch.zeros(32, 8, 3, 3)
    del sd["classifier.0.bias"]
    sd["extra.weight"] = torch.zeros(2)
    torch.save(sd, tmp_path / "bad.pth")
    with pytest.raises(ji.CheckpointError) as e:
        ji.import_weights(tmp_path / "bad.pth", arch="vgg-mini", out=tmp_path / "out")
    msg = str(e.value)
    assert "params/features_4/kernel: file has (3, 3, 8, 32), architecture expects (3, 3, 16, 32)" in msg
    assert "missing params/classifier_0/bias (8,)" in msg
    assert "unexpected params/extra.weight (2,)" in msg
    assert not (tmp_path / "out").exists()


def test_wrong_arch_is_rejected(mini_torch):
    _, d = mini_torch
    with pytest.raises(ji.CheckpointError, match="does not match the architecture"):
        ji.import_weights(d / "mini.pth", arch="vgg11")


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_truncated_file(mini_torch, tmp_path, suffix):
    _, d = mini_torch
    data = (d / f"mini{suffix}").read_bytes()
    (tmp_path / f"t{suffix}").write_bytes(data[: len(data) // 2])
    with pytest.raises(ji.CheckpointError, match="could not read"):
        ji.import_weights(tmp_path / f"t{suffix}", arch="vgg-mini", out=tmp_path / "out")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("suffix", [".pth", ".safetensors", ".h5"])
def test_non_weight_file(tmp_path, suffix):
    (tmp_path / f"x{suffix}").write_text("hello, not weights")
    with pytest.raises(ji.CheckpointError, match="could not read"):
        ji.import_weights(tmp_path / f"x{suffix}", arch="vgg16")


def test_pth_holding_other_objects(tmp_path):
    torch.save([1, 2, 3], tmp_path / "list.pth")
    with pytest.raises(ji.CheckpointError, match="not a state dict"):
        ji.import_weights(tmp_path / "list.pth", arch="vgg-mini")


def test_unknown_arch_and_format(mini_torch, tmp_path):
    _, d = mini_torch
    with pytest.raises(ValueError, match="unknown arch 'vgg12'"):
        ji.import_weights(d / "mini.pth", arch="vgg12")
    (tmp_path / "w.npy").write_bytes(b"")
    with pytest.raises(ValueError, match="pass fmt="):
        ji.import_weights(tmp_path / "w.npy", arch="vgg16")
    (tmp_path / "w.npz").write_bytes(b"")  # .npz: ViT checkpoints only
    with pytest.raises(ValueError, match="npz import is for ViTs"):
        ji.import_weights(tmp_path / "w.npz", arch="vgg16")
    with pytest.raises(FileNotFoundError):
        ji.import_weights(tmp_path / "missing.pth", arch="vgg16")


def test_non_finite_weights_are_refused(mini_torch, tmp_path):
    tm, _ = mini_torch
    sd = {k: v.clone() for k, v in tm.state_dict().items()}
    sd["features.4.weight"][0, 0, 0, 0] = float("nan")
    safetensors_torch.save_file(sd, str(tmp_path / "nan.safetensors"))
    with pytest.raises(ji.CheckpointError, match="NaN or infinite values in params/features_4"):
        ji.import_weights(tmp_path / "nan.safetensors", arch="vgg-mini", out=tmp_path / "out")
    assert not (tmp_path / "out").exists()
