"""Model object: layer names, aliases, input checks, jit behaviour, checkpoints."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxinterp as ji
from jaxinterp import model as model_lib
from jaxinterp import weights
from jaxinterp.models import vgg as vgg_lib


def test_vgg16_layer_names_match_torchvision():
    specs = {s.name: s for s in vgg_lib.layer_specs(vgg_lib.CFGS["vgg16"])}
    convs = [n for n, s in specs.items() if s.kind == "conv"]
    assert convs == [f"features.{i}" for i in (0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28)]
    assert specs["features.28"].alias == "conv5_3"
    assert specs["features.29"].alias == "relu5_3"
    assert specs["features.30"].alias == "pool5"
    assert [specs[f"classifier.{i}"].alias for i in (0, 3, 6)] == ["fc6", "fc7", "fc8"]


def test_bn_layout_matches_torchvision():
    specs = vgg_lib.layer_specs(vgg_lib.CFGS["vgg16"], batch_norm=True)
    names = {s.alias: s.name for s in specs if s.alias}
    # torchvision vgg16_bn: features.40 is the last conv, features.43 the last pool
    assert names["conv5_3"] == "features.40" and names["bn5_3"] == "features.41"
    assert names["pool5"] == "features.43"


def test_forward_returns_every_layer_and_alias(mini):
    x = ji.data.shapes(jax.random.key(3), 2).images
    logits, feats = mini(x)
    assert logits.shape == (2, 8)
    for name in mini.layers:
        assert name in feats
    np.testing.assert_array_equal(feats["logits"], logits)
    np.testing.assert_array_equal(feats["conv4_2"], feats[mini.resolve("conv4_2")])
    # the ReLU output is the rectified BN output that precedes it
    i = int(mini.resolve("relu4_2").split(".")[1])
    np.testing.assert_allclose(feats[f"features.{i}"], jnp.maximum(feats[f"features.{i - 1}"], 0))
    np.testing.assert_allclose(feats["avgpool"], feats[mini.layers[-3]].mean((1, 2)), rtol=1e-5,
                               atol=1e-6)


@pytest.mark.parametrize("start", [1, 4, 11])
def test_resume_from_a_layer_equals_the_full_pass(mini, start):
    x = jax.random.uniform(jax.random.key(2), (2, 64, 64, 3))
    logits, feats = mini(x)
    name = mini.layers[start - 1]
    got_logits, got = mini.resume(feats[name], start, {name: feats[name]})
    np.testing.assert_allclose(got_logits, logits, rtol=1e-5, atol=1e-5)
    assert [layer for layer in mini.layers if layer in got] == mini.layers[start - 1:]
    for layer in mini.layers[start - 1:]:
        np.testing.assert_allclose(got[layer], feats[layer], rtol=1e-5, atol=1e-5)
    for alias, layer in mini.aliases.items():
        assert (alias in got) == (layer in got)


def test_chunked_sum_equals_the_plain_sum():
    from jaxinterp.chunking import chunked_sum

    xs = (jnp.arange(7.0), jnp.arange(14.0).reshape(7, 2))
    f = lambda p: {"a": p[0] ** 2, "b": p[1] * p[0]}  # noqa: E731
    want = {"a": (xs[0] ** 2).sum(), "b": (xs[1] * xs[0][:, None]).sum(0)}
    for bs in (None, 1, 2, 3, 7, 9):  # chunks with and without a remainder
        got = chunked_sum(f, xs, bs)
        np.testing.assert_allclose(got["a"], want["a"])
        np.testing.assert_allclose(got["b"], want["b"])
    with pytest.raises(ValueError, match="batch_size must be a positive"):
        chunked_sum(f, xs, 0)


def test_preprocessing_is_applied_inside(mini):
    x = ji.data.shapes(jax.random.key(3), 2).images
    raw = mini.module.apply(mini.variables, (x - 0.5) / 0.25)[0]
    np.testing.assert_allclose(mini(x)[0], raw, rtol=1e-5, atol=1e-5)


def test_unknown_layer_lists_valid_names(mini):
    with pytest.raises(ValueError, match=r"unknown layer 'conv9_9'.*features\.0 \(conv1_1\)"):
        mini.resolve("conv9_9")
    assert mini.resolve("logits") == "classifier.0"


def _one_pixel(value):
    x = np.full((2, 64, 64, 3), 0.5, np.float32)
    x[1, 40, 7, 2] = value
    return x


@pytest.mark.parametrize("x, match", [
    (np.zeros((64, 64, 3), np.float32), r"rank 4.*x\[None\]"),
    (np.zeros((1, 3, 64, 64), np.float32), r"3 RGB channels last.*transpose"),
    (np.zeros((1, 64, 64, 4), np.float32), r"3 RGB channels"),
    (np.zeros((1, 64, 64, 3), np.uint8), r"floating point.*/ 255"),
    (np.full((1, 64, 64, 3), 2.0, np.float32), r"values in \[0, 1\]"),
    (np.full((1, 64, 64, 3), np.nan, np.float32), r"NaN"),
    (_one_pixel(np.nan), r"NaN"),  # a full-size batch, one NaN: min/max may skip it
    (_one_pixel(np.inf), r"NaN or infinite"),
    (np.zeros((0, 64, 64, 3), np.float32), r"empty batch"),
    (np.zeros((1, 4, 4, 3), np.float32), r"at least 8x8"),
])
def test_bad_images_get_clear_errors(mini, x, match):
    with pytest.raises((ValueError, TypeError), match=match):
        mini(x)


def test_model_is_a_pytree_and_jit_does_not_retrace(mini):
    traces = []

    @jax.jit
    def f(m, x):
        traces.append(1)
        return m(x)[0]

    other = mini.with_variables(jax.tree_util.tree_map(lambda v: v * 1.01, mini.variables))
    x1 = ji.data.shapes(jax.random.key(1), 2).images
    x2 = ji.data.shapes(jax.random.key(2), 2).images
    a = f(mini, x1)
    f(mini, x2)
    b = f(other, x1)
    assert len(traces) == 1
    assert not np.allclose(a, b)


def test_unknown_arch():
    with pytest.raises(ValueError, match="neither a known architecture.*vgg16"):
        ji.load_model("vgg17")


def test_load_model_rejects_weight_file(tmp_path):
    f = tmp_path / "w.pth"
    f.write_bytes(b"x")
    with pytest.raises(ValueError, match="import it first"):
        ji.load_model(str(f))


def test_save_load_roundtrip(mini, tmp_path):
    path = ji.save_model(mini, tmp_path / "ck")
    m2 = ji.load_model(str(path))
    assert m2.meta == mini.meta
    for a, b in zip(jax.tree_util.tree_leaves(mini.variables), jax.tree_util.tree_leaves(m2.variables)):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(FileExistsError, match="overwrite=True"):
        ji.save_model(mini, path)


def test_interrupted_save_leaves_nothing_loadable(mini, tmp_path, monkeypatch):
    def boom(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(weights, "params_checksum", boom)  # dies after the state, before metadata
    with pytest.raises(KeyboardInterrupt):
        ji.save_model(mini, tmp_path / "ck")
    assert list(tmp_path.iterdir()) == []


def test_checkpoint_with_wrong_shapes_is_rejected(mini, tmp_path):
    path = ji.save_model(mini, tmp_path / "ck")
    meta = weights.read_metadata(path)
    meta["config"]["num_classes"] = 5  # the state has 8 outputs
    meta["classes"] = meta["classes"][:5]
    (path / "metadata.json").write_text(__import__("json").dumps(meta))
    with pytest.raises(ji.CheckpointError, match=r"classifier_0/bias: file has \(8,\), architecture expects \(5,\)"):
        ji.load_model(str(path))


@pytest.mark.slow
def test_vgg16_random_init_is_deterministic():
    a = model_lib.init_model("vgg11", jax.random.key(0), num_classes=10)
    b = model_lib.init_model("vgg11", jax.random.key(0), num_classes=10)
    leaves = zip(jax.tree_util.tree_leaves(a.variables), jax.tree_util.tree_leaves(b.variables))
    assert all(np.array_equal(u, v) for u, v in leaves)
    assert a.classes[:2] == ["class_0", "class_1"] and a.num_classes == 10


# ---------------------------------------------------------------- checkpoints are users' files


def test_two_imported_checkpoints_share_one_compilation(tmp_path):
    torch = pytest.importorskip("torch")
    st = pytest.importorskip("safetensors.torch")
    from torch_vgg import seeded_vgg

    models = []
    for seed, classes in ((0, None), (1, [f"kind{i}" for i in range(8)])):
        net = seeded_vgg("vgg-mini", seed, num_classes=8, batch_norm=True)
        st.save_file(net.state_dict(), str(tmp_path / f"w{seed}.safetensors"))
        ji.import_weights(tmp_path / f"w{seed}.safetensors", arch="vgg-mini",
                          out=tmp_path / f"ck{seed}", classes=classes)
        models.append(ji.load_model(str(tmp_path / f"ck{seed}")))
    a, b = models
    assert a.meta != b.meta and a.classes != b.classes  # other files, other names
    traces = []

    @jax.jit
    def f(m, x):
        traces.append(1)
        return m(x)[0]

    x = jax.random.uniform(jax.random.key(0), (1, 64, 64, 3))
    la, lb = f(a, x), f(b, x)
    assert len(traces) == 1 and not np.allclose(la, lb)
    y = np.array([1])
    ji.saliency(a, x, y)
    before = ji.attribution.core.rule_gradient._cache_size()
    ji.saliency(b, x, y)
    assert ji.attribution.core.rule_gradient._cache_size() == before
    del torch


def test_overwrite_refuses_what_is_not_a_checkpoint(mini, tmp_path):
    project = tmp_path / "project"
    project.mkdir()
    (project / "data.csv").write_text("precious")
    with pytest.raises(FileExistsError, match="not a jaxinterp checkpoint"):
        ji.save_model(mini, project, overwrite=True)
    assert (project / "data.csv").read_text() == "precious"
    ck = ji.save_model(mini, tmp_path / "ck")
    (ck / "README").write_text("a user's note inside the checkpoint")
    with pytest.raises(FileExistsError, match="not a jaxinterp checkpoint"):
        ji.save_model(mini, ck, overwrite=True)
    assert (ck / "README").exists()
    (ck / "README").unlink()
    other = mini.with_variables(jax.tree_util.tree_map(lambda v: v + 1, mini.variables))
    ji.save_model(other, ck, overwrite=True)  # a checkpoint: replaced
    np.testing.assert_allclose(ji.load_model(str(ck)).params["classifier_0"]["bias"],
                               other.params["classifier_0"]["bias"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ck", "project"]


def test_stale_partial_writes_are_cleaned_and_a_lost_replacement_restored(mini, tmp_path):
    dead = 2 ** 22 + 12345  # above the default pid_max: no such process
    ck = ji.save_model(mini, tmp_path / "ck")
    partial = tmp_path / f".ck.partial-{dead}-abc"
    (partial / "state").mkdir(parents=True)  # as a SIGKILLed import leaves it
    os.rename(ck, tmp_path / f".ck.old-{dead}")  # killed between moving aside and moving in
    (tmp_path / ".keep.partial-1-x").mkdir()  # another name's: not ours to touch
    ji.save_model(mini, tmp_path / "other")  # another path's write leaves them alone
    assert partial.exists() and (tmp_path / f".ck.old-{dead}").exists()
    with pytest.raises(FileExistsError):  # the next write of ck restores it first
        ji.save_model(mini, tmp_path / "ck")
    assert not partial.exists() and (tmp_path / ".keep.partial-1-x").exists()
    assert ji.load_model(str(tmp_path / "ck")).meta == mini.meta
    assert not (tmp_path / f".ck.old-{dead}").exists()


def test_a_flipped_bit_is_refused_at_load(mini, tmp_path):
    ck = ji.save_model(mini, tmp_path / "ck")
    files = sorted((p for p in (ck / "state").rglob("*") if p.is_file()),
                   key=lambda p: p.stat().st_size)
    data = bytearray(files[-1].read_bytes())  # the largest: parameter data
    data[len(data) // 2] ^= 0x10
    files[-1].write_bytes(bytes(data))
    with pytest.raises(ji.CheckpointError, match="corrupt"):
        ji.load_model(str(ck))
    assert "params_sha256" in weights.read_metadata(weights.default_checkpoint())  # verified too


@pytest.mark.parametrize("edit, match", [
    (lambda d: d.pop("classes"), "metadata lacks classes"),
    (lambda d: d.__setitem__("classes", d["classes"][:3]), "3 class names for a model with 8"),
    (lambda d: d["preprocess"].__setitem__("std", [0.25, 0, 0.25]), "std must be non-zero"),
    (lambda d: d.__setitem__("input_size", "64x64"), "input_size must be"),
    (lambda d: d.__setitem__("preprocess", [1, 2]), "preprocess must be an object"),
    (lambda d: d.__setitem__("config", {"num_classes": 8, "wings": 2}), "do not describe"),
])
def test_bad_metadata_is_refused_at_load(mini, tmp_path, edit, match):
    ck = ji.save_model(mini, tmp_path / "ck")
    meta = json.loads((ck / "metadata.json").read_text())
    edit(meta)
    (ck / "metadata.json").write_text(json.dumps(meta))
    with pytest.raises(ji.CheckpointError, match=match):
        ji.load_model(str(ck))


def test_a_truncated_checkpoint_says_so_cleanly(mini, tmp_path, capfd):
    ck = ji.save_model(mini, tmp_path / "ck")
    for p in (ck / "state").rglob("*"):
        if p.is_file() and p.stat().st_size > 1000:
            p.write_bytes(p.read_bytes()[: p.stat().st_size // 3])
    with pytest.raises(ji.CheckpointError, match="truncated or corrupt"):
        ji.load_model(str(ck))
    err = capfd.readouterr().err
    assert "Traceback" not in err, err[:2000]


def test_architecture_names_and_paths_are_not_confused(tmp_path, monkeypatch, mini):
    monkeypatch.chdir(tmp_path)
    ji.save_model(mini, "vgg11")  # a directory named like an architecture
    m = ji.load_model("vgg11", key=jax.random.key(0), num_classes=4, hidden=8)
    assert m.arch == "vgg11" and m.num_classes == 4  # key=: the architecture
    assert ji.load_model("./vgg11").arch == "vgg-mini"  # a path: the checkpoint
    with pytest.raises(ValueError, match="both an architecture and a directory"):
        ji.load_model("vgg11")
