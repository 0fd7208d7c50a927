"""Model object: layer names, aliases, input checks, jit behaviour, checkpoints."""

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


@pytest.mark.parametrize("x, match", [
    (np.zeros((64, 64, 3), np.float32), r"rank 4.*x\[None\]"),
    (np.zeros((1, 3, 64, 64), np.float32), r"3 RGB channels last.*transpose"),
    (np.zeros((1, 64, 64, 4), np.float32), r"3 RGB channels"),
    (np.zeros((1, 64, 64, 3), np.uint8), r"floating point.*/ 255"),
    (np.full((1, 64, 64, 3), 2.0, np.float32), r"values in \[0, 1\]"),
    (np.full((1, 64, 64, 3), np.nan, np.float32), r"NaN"),
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

    monkeypatch.setattr(weights.json, "dumps", boom)  # dies after the state, before metadata
    with pytest.raises(KeyboardInterrupt):
        ji.save_model(mini, tmp_path / "ck")
    assert list(tmp_path.iterdir()) == []


def test_checkpoint_with_wrong_shapes_is_rejected(mini, tmp_path):
    path = ji.save_model(mini, tmp_path / "ck")
    meta = weights.read_metadata(path)
    meta["config"]["num_classes"] = 5  # the state has 8 outputs
    (path / "metadata.json").write_text(__import__("json").dumps(meta))
    with pytest.raises(ji.CheckpointError, match=r"classifier_0/bias: file has \(8,\), architecture expects \(5,\)"):
        ji.load_model(str(path))


def test_vgg16_random_init_is_deterministic():
    a = model_lib.init_model("vgg11", jax.random.key(0), num_classes=10)
    b = model_lib.init_model("vgg11", jax.random.key(0), num_classes=10)
    leaves = zip(jax.tree_util.tree_leaves(a.variables), jax.tree_util.tree_leaves(b.variables))
    assert all(np.array_equal(u, v) for u, v in leaves)
    assert a.classes[:2] == ["class_0", "class_1"] and a.num_classes == 10
