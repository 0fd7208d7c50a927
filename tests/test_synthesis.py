"""DeepDream and feature inversion on the shipped vgg-mini."""

import importlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import ndimage

import jaxinterp as ji

dd = importlib.import_module("jaxinterp.synthesis.deepdream")  # the package exports the function

TEST_SEED = 1_000_003  # held out from training (scripts/train_default.py)


@pytest.fixture(scope="session")
def images():
    return ji.data.shapes(jax.random.key(TEST_SEED), 3, start=500).images


@pytest.fixture(scope="session")
def octaves(default_model, images):
    return list(ji.synthesis.dream(default_model, images, "relu3_2", octaves=3, key=1))


def psnr(a, b):
    return 10 * np.log10(1 / np.mean((np.asarray(a) - np.asarray(b)) ** 2, axis=(1, 2, 3)))


# --- DeepDream --------------------------------------------------------------------------------

def test_dream_raises_the_objective_at_every_octave(octaves):
    assert [o.images.shape[1:3] for o in octaves] == [(33, 33), (46, 46), (64, 64)]
    for o in octaves:
        s = np.asarray(o.scores)  # [steps + 1, N]
        assert s.shape == (11, 3)
        assert (s[-1] > 1.5 * s[0]).all(), (o.index, s[[0, -1]])


def test_detail_is_carried_to_the_next_octave(default_model, images, octaves):
    # the largest octave starts from the image plus the zoomed detail, so it starts above
    # where the clean image is
    f = jax.jit(lambda m, x: ji.objectives.deepdream("relu3_2")(ji.optvis.features(m, x)))
    clean = np.asarray(f(default_model, images))
    assert (np.asarray(octaves[-1].scores[0]) > clean).all()


def test_deepdream_is_the_last_octave_in_0_1_and_seeded(default_model, images, octaves):
    out = ji.deepdream(default_model, images, "relu3_2", octaves=3, key=1)
    np.testing.assert_array_equal(out, octaves[-1].images)
    assert float(out.min()) >= 0 and float(out.max()) <= 1
    other = ji.deepdream(default_model, images, "relu3_2", octaves=3, key=2)
    assert float(jnp.abs(other - out).max()) > 1e-3


def test_each_octave_shape_compiles_once(default_model, images):
    ji.deepdream(default_model, images, "relu2_2", octaves=2, steps=2, key=0)
    before = dd._octave._cache_size()
    x = ji.data.shapes(jax.random.key(TEST_SEED), 3, start=900).images
    ji.deepdream(default_model, x, "relu2_2", octaves=2, steps=2, key=5, step_size=0.01)
    assert dd._octave._cache_size() == before


def test_any_objective_can_be_dreamed(default_model, images):
    obj = ji.objectives.channel("relu4_2", 7)
    f = jax.jit(lambda m, x: obj(ji.optvis.features(m, x)))
    out = ji.deepdream(default_model, images, obj, octaves=2, steps=5)
    assert (np.asarray(f(default_model, out)) > np.asarray(f(default_model, images))).all()


def test_zoom_equals_scipy_linear_zoom():
    x = np.random.default_rng(0).random((2, 17, 23, 3)).astype(np.float32)
    ours = np.asarray(dd.zoom(jnp.asarray(x), (12, 16)))
    theirs = ndimage.zoom(x, (1, 12 / 17, 16 / 23, 1), order=1)
    assert theirs.shape == ours.shape
    np.testing.assert_allclose(ours, theirs, atol=1e-5)
    sizes, a = [], np.zeros((224, 200))  # the notebook's pyramid: repeated zooms by 1 / 1.4
    for _ in range(4):
        sizes.insert(0, a.shape)
        a = ndimage.zoom(a, 1 / 1.4, order=1)
    assert dd.octave_sizes((224, 200), 4, 1.4) == sizes


def test_deepdream_errors(default_model, images):
    m = default_model
    with pytest.raises(ValueError, match="unknown layer"):
        ji.deepdream(m, images, "conv9_9")
    with pytest.raises(ValueError, match="octaves=8 .* needs at least 8x8"):
        ji.deepdream(m, images, "relu2_2", octaves=8)
    with pytest.raises(ValueError, match="steps"):
        ji.deepdream(m, images, "relu2_2", steps=0)
    with pytest.raises(ValueError, match="octave_scale"):
        ji.deepdream(m, images, "relu2_2", octave_scale=0.5)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        ji.deepdream(m, images * 255, "relu2_2")


# --- inversion --------------------------------------------------------------------------------

@pytest.fixture(scope="session")
def inversions(default_model, images):
    return {layer: ji.invert(default_model, images, layer, steps=300)
            for layer in ("relu1_1", "pool1", "relu2_2", "relu4_2")}


def test_inversion_of_an_early_layer_reconstructs_the_image(images, inversions):
    for layer in ("relu1_1", "pool1"):
        assert psnr(inversions[layer].images, images).min() >= 20, layer
        assert float(inversions[layer].error.max()) < 0.1


def test_reconstruction_quality_falls_with_depth(images, inversions):
    q = [psnr(inversions[k].images, images).mean() for k in ("relu1_1", "pool1", "relu2_2",
                                                             "relu4_2")]
    assert q == sorted(q, reverse=True), q
    assert q[0] - q[-1] > 15


def test_inverting_given_features_equals_inverting_the_images(default_model, images):
    a = ji.invert(default_model, images, "pool1", steps=20, key=3)
    feats = default_model(images)[1]["pool1"]
    b = ji.invert(default_model, None, "pool1", target=feats, steps=20, key=3)
    np.testing.assert_allclose(a.images, b.images, atol=1e-6)
    assert a.losses.shape == (20, 3)
    assert np.asarray(a.losses[-1] < a.losses[0]).all()


def test_inversion_compiles_once_for_new_images_and_weights(default_model, images):
    inv = importlib.import_module("jaxinterp.synthesis.inversion")
    ji.invert(default_model, images, "pool1", steps=2)
    before = inv._invert._cache_size()
    ji.invert(default_model, images[::-1], "pool1", steps=2, tv_weight=0.1, lr=0.01, key=4)
    assert inv._invert._cache_size() == before


def test_inversion_errors(default_model, images):
    m = default_model
    with pytest.raises(ValueError, match="unknown layer"):
        ji.invert(m, images, "conv9_9")
    with pytest.raises(ValueError, match="target has shape"):
        ji.invert(m, None, "pool1", target=jnp.ones((2, 8, 8, 16)))
    with pytest.raises(ValueError, match="images x or target"):
        ji.invert(m, None, "pool1")
    with pytest.raises(ValueError, match="tv_weight"):
        ji.invert(m, images, "pool1", tv_weight=-1.0)


# --- inversion's priors (Mahendran & Vedaldi 2015; aravindhm/deep-goggle core/invert_nn.m) -----

def numpy_tv(x, beta):
    """deep-goggle's `tv(x, beta)` per image (d1 = x(:, [2:end end]) - x, d2 likewise down the
    rows, sum of sqrt(d1² + d2²)^β over pixels and channels), divided by H·W·C."""
    x = np.asarray(x, np.float64)
    _, h, w, c = x.shape
    d1 = x[:, :, np.r_[1:w, w - 1]] - x
    d2 = x[:, np.r_[1:h, h - 1]] - x
    return (np.sqrt(d1 * d1 + d2 * d2) ** beta).sum((1, 2, 3)) / (h * w * c)


def numpy_alpha_norm(x, alpha):
    """The α-norm Σ |x|^α on pixels mapped from [0, 1] to [-1, 1], divided by H·W·C."""
    return (np.abs(2 * np.asarray(x, np.float64) - 1) ** alpha).mean((1, 2, 3))


@pytest.mark.parametrize("beta", [1.0, 1.5, 2.0, 3.0])
def test_tv_prior_is_mahendran_and_vedaldis(beta):
    x = np.random.default_rng(0).random((2, 5, 7, 3))
    prior = ji.objectives.tv_beta(beta)
    np.testing.assert_allclose(prior({"input": jnp.asarray(x, jnp.float32)}), numpy_tv(x, beta),
                               rtol=1e-5)
    flat = jnp.full((1, 4, 4, 3), 0.5).at[0, 1, 2, 0].set(0.9)  # zero differences: no NaN
    g = jax.grad(lambda a: prior({"input": a}).sum())(flat)
    assert np.isfinite(np.asarray(g)).all()


@pytest.mark.parametrize("alpha", [1.0, 2.0, 3.0, 6.0])
def test_alpha_norm_prior(alpha):
    x = np.random.default_rng(1).random((2, 5, 7, 3))
    prior = ji.objectives.alpha_norm(alpha)
    np.testing.assert_allclose(prior({"input": jnp.asarray(x, jnp.float32)}),
                               numpy_alpha_norm(x, alpha), rtol=1e-5)


def test_prior_weights_lower_their_priors_in_a_reconstruction(default_model, images):
    x = images[:1, 24:40, 24:40]  # 16 x 16: cheap
    kw = dict(steps=8, key=0)
    plain = ji.invert(default_model, x, "relu2_2", tv_weight=0.0, alpha_weight=0.0, **kw).images
    smooth = ji.invert(default_model, x, "relu2_2", tv_weight=20.0, alpha_weight=0.0, **kw).images
    tame = ji.invert(default_model, x, "relu2_2", tv_weight=0.0, alpha_weight=20.0, **kw).images
    assert numpy_tv(smooth, 2)[0] < 0.5 * numpy_tv(plain, 2)[0]
    assert numpy_alpha_norm(tame, 6)[0] < 0.5 * numpy_alpha_norm(plain, 6)[0]
