"""Ground truth on `shapes` and the model-randomization sanity check, on the shipped vgg-mini."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxinterp as ji
from jaxinterp import evaluation as ev


def test_spearman_and_ranks():
    a = np.array([[1.0, 2.0, 3.0, 4.0]])
    assert np.isclose(ev.spearman(a, a ** 3)[0], 1.0)  # any monotone map
    assert np.isclose(ev.spearman(a, -a)[0], -1.0)
    np.testing.assert_array_equal(ev._ranks(np.array([5.0, 1.0, 5.0, 0.0])), [2.5, 1, 2.5, 0])


def test_pointing_and_mass():
    mask = np.zeros((2, 4, 4), bool)
    mask[:, :2, :2] = True
    maps = np.zeros((2, 4, 4))
    maps[0, 0, 0], maps[0, 3, 3] = 3.0, 1.0  # peak inside, 3/4 of the mass inside
    maps[1, 3, 3] = 2.0  # peak outside
    np.testing.assert_array_equal(ev.pointing_game(maps, mask), [True, False])
    np.testing.assert_allclose(ev.mass_inside(maps, mask), [0.75, 0.0])


@pytest.fixture(scope="session")
def held_out():
    b = ji.data.shapes(jax.random.key(1_000_003), 100, start=10_000)
    return b.images, b.labels, np.asarray(b.mask)


def test_best_methods_point_at_the_object(default_model, held_out):
    # the README's table (500 images): guided backprop and Guided Grad-CAM 100 %, Grad-CAM 84 %
    x, y, mask = held_out
    assert ev.pointing_game(ji.guided_grad_cam(default_model, x, y), mask).mean() >= 0.85
    assert ev.pointing_game(ji.grad_cam(default_model, x, y), mask).mean() >= 0.7
    # far above chance: the object covers about a tenth of the image
    assert ev.pointing_game(np.random.default_rng(0).random(mask.shape), mask).mean() < 0.3


@pytest.mark.slow  # 15 s each; the cascade itself is checked in the default run below
@pytest.mark.parametrize("method", [ji.saliency, ji.grad_cam])
def test_randomizing_the_top_layers_destroys_the_map(default_model, held_out, method):
    x, y, _ = held_out
    x, y = x[:16], y[:16]
    base = ev.heatmap(method(default_model, x, y))
    top2 = ev.cascading_randomization(default_model, jax.random.key(5), depth=2)
    rho = ev.spearman(base, ev.heatmap(method(top2, x, y)))
    assert rho.mean() < 0.5


@pytest.mark.slow
def test_the_randomization_check_can_tell_methods_apart(default_model, held_out):
    # the same check gives guided backprop a high correlation (it reconstructs the image more
    # than it explains the class; Adebayo et al.), so the low values above are informative
    x, y, _ = held_out
    x, y = x[:16], y[:16]
    top2 = ev.cascading_randomization(default_model, jax.random.key(5), depth=2)
    gbp = ev.spearman(ev.heatmap(ji.guided_backprop(default_model, x, y)),
                      ev.heatmap(ji.guided_backprop(top2, x, y)))
    sal = ev.spearman(ev.heatmap(ji.saliency(default_model, x, y)),
                      ev.heatmap(ji.saliency(top2, x, y)))
    assert gbp.mean() > 0.75 and gbp.mean() > sal.mean() + 0.3


def test_cascading_randomization_changes_only_the_top_layers(default_model):
    r = ev.cascading_randomization(default_model, jax.random.key(5), depth=2)
    p, q = default_model.params, r.params
    assert not np.allclose(p["classifier_0"]["kernel"], q["classifier_0"]["kernel"])
    assert not np.allclose(p["features_21"]["kernel"], q["features_21"]["kernel"])
    np.testing.assert_array_equal(p["features_18"]["kernel"], q["features_18"]["kernel"])
    np.testing.assert_array_equal(r.variables["batch_stats"]["features_22"]["var"], 1.0)


def test_cascading_randomization_of_a_vit_goes_from_the_head_down():
    m = ji.load_model("vit-mini", key=0)
    names = ev.randomization_layers(m)
    assert names == ["head", "encoder_layer_3", "encoder_layer_2", "encoder_layer_1",
                     "encoder_layer_0", "conv_proj"]
    p = m.variables["params"]
    blocks = lambda v: v["encoder"]["layers"]  # noqa: E731
    for depth in (2, 6):
        q = ev.cascading_randomization(m, jax.random.key(5), depth).variables["params"]
        new = lambda a, b: not np.allclose(a, b)  # noqa: E731
        assert new(p["heads"]["head"]["kernel"], q["heads"]["head"]["kernel"])
        assert new(blocks(p)["encoder_layer_3"]["mlp"]["0"]["kernel"],
                   blocks(q)["encoder_layer_3"]["mlp"]["0"]["kernel"])
        kept = blocks(p)["encoder_layer_2"]["mlp"]["0"]["kernel"], \
            blocks(q)["encoder_layer_2"]["mlp"]["0"]["kernel"]
        assert new(*kept) == (depth == 6)
        assert new(p["conv_proj"]["kernel"], q["conv_proj"]["kernel"]) == (depth == 6)
        assert new(p["encoder"]["pos_embedding"], q["encoder"]["pos_embedding"]) == (depth == 6)
    with pytest.raises(ValueError, match="depth must be in 0..6"):
        ev.cascading_randomization(m, jax.random.key(5), 7)


# --- deletion / insertion (Petsiuk et al. 2018; eclique/RISE evaluation.py) ------------------

def rise_gkern(klen, nsig):
    """RISE's `gkern`, one channel: scipy's Gaussian filter of a centred delta."""
    from scipy.ndimage import gaussian_filter

    inp = np.zeros((klen, klen))
    inp[klen // 2, klen // 2] = 1
    return gaussian_filter(inp, nsig)


def numpy_blur(x, kern, fill):
    """RISE's `conv2d(x, kern, padding=klen // 2)` on the normalized image, in [0, 1] units."""
    from scipy.ndimage import correlate

    return fill + correlate(np.asarray(x, np.float64) - fill, kern[None, :, :, None],
                            mode="constant", cval=0.0)


@pytest.mark.parametrize("klen,sig", [(11, 5.0), (5, 1.0), (7, 3.0), (1, 2.0)])
def test_blur_kernel_is_rise_gkern(klen, sig):
    np.testing.assert_allclose(ev.rise_kernel(klen, sig), rise_gkern(klen, sig), rtol=1e-12,
                               atol=1e-15)
    x = np.random.default_rng(0).random((2, 9, 13, 3))
    fill = np.array([0.2, 0.5, 0.7])
    np.testing.assert_allclose(ev.rise_blur(jnp.asarray(x, jnp.float32), ev.rise_kernel(klen, sig),
                                            fill),
                               numpy_blur(x, rise_gkern(klen, sig), fill), atol=1e-5)


def test_auc_is_rise_trapezoid():
    curve = np.array([[1.0, 0.5, 0.25, 0.0], [0.0, 0.0, 1.0, 1.0]])
    # by hand: the trapezoids (1 + .5)/2 + (.5 + .25)/2 + (.25 + 0)/2 = 1.25 over 3 intervals
    np.testing.assert_allclose(ev.auc(curve), [1.25 / 3, 1.5 / 3])


def test_ranking_is_signed_for_maps():
    raw = np.array([[[3.0, -5.0], [1.0, 0.0]]])  # the negative pixel is moved last
    np.testing.assert_array_equal(ev.pixel_ranks(ev.ranking_map(raw)), [[[0, 3], [1, 2]]])
    a = np.zeros((1, 2, 2, 3))
    a[0, 0, 1] = [-4.0, 0.0, 1.0]  # channel attributions: |a| summed, so this pixel first
    a[0, 1, 0] = [1.0, 1.0, 1.0]
    np.testing.assert_array_equal(ev.pixel_ranks(ev.ranking_map(a)), [[[2, 0], [1, 3]]])


def _linear_logits(params, x):  # module level: hashable, so ji.wrap reuses compilations
    s = (x * params).sum((1, 2, 3))
    return jnp.stack([s, jnp.zeros_like(s)], 1)


def test_curves_equal_rise_causal_metric_on_a_linear_model():
    """RISE's `CausalMetric.evaluate`, transcribed to NumPy on the normalized input (the space
    RISE works in), for a model whose class-0 probability is sigmoid(Σ w · n(x))."""
    rng = np.random.default_rng(3)
    h = w = 8
    size, steps = h * w, 8
    pre = ji.Preprocess(mean=(0.4, 0.5, 0.6), std=(0.2, 0.25, 0.3))
    weights = rng.normal(0, 0.2, (h, w, 3))
    m = ji.wrap(_linear_logits, jnp.asarray(weights, jnp.float32), preprocess=pre,
                input_size=(h, w))
    x = rng.random((2, h, w, 3))
    expl = rng.normal(size=(2, h, w))  # signed, no ties
    out = ev.deletion_insertion(m, jnp.asarray(x, jnp.float32), 0, expl, steps=steps)

    mean, std = np.array(pre.mean), np.array(pre.std)
    norm = lambda v: (v - mean) / std  # noqa: E731
    prob = lambda v: 1 / (1 + np.exp(-(v * weights).sum((1, 2, 3))))  # noqa: E731
    blurred = numpy_blur(norm(x), rise_gkern(11, 5), 0.0)  # RISE: conv2d with zero padding
    black = np.broadcast_to(norm(0.0), x.shape)  # RISE: torch.zeros_like; ours: black
    step = size // steps
    order = np.flip(np.argsort(expl.reshape(-1, size), axis=1), axis=-1)
    for mode, start, finish in (("deletion", norm(x), black), ("insertion", blurred, norm(x))):
        start, finish = start.reshape(2, size, 3).copy(), finish.reshape(2, size, 3)
        scores = np.empty((steps + 1, 2))
        for i in range(steps + 1):
            scores[i] = prob(start.reshape(x.shape))
            coords = order[:, step * i:step * (i + 1)]
            r = np.arange(2)[:, None]
            start[r, coords] = finish[r, coords]
        np.testing.assert_allclose(out[mode], scores.T, atol=2e-5, err_msg=mode)
        np.testing.assert_allclose(out[f"{mode}_auc"],
                                   (scores.sum(0) - scores[0] / 2 - scores[-1] / 2) / steps,
                                   atol=2e-5)


def test_curve_endpoints_on_the_shipped_model(default_model, held_out):
    # 8 images, default steps: the program test_runs compiles for a run's metrics
    x, y = held_out[0][:8], held_out[1][:8]
    attr = np.random.default_rng(0).normal(size=x.shape[:3])  # the endpoints hold for any map
    out = ev.deletion_insertion(default_model, x, y, attr)
    p = lambda v: np.asarray(jax.nn.softmax(default_model(jnp.asarray(v, jnp.float32))[0]))[  # noqa
        np.arange(8), np.asarray(y)]
    fill = np.asarray(default_model.preprocess.mean)  # mean / scale: what normalizes to 0
    np.testing.assert_allclose(out["deletion"][:, 0], p(x), atol=1e-5)
    np.testing.assert_allclose(out["deletion"][:, -1], p(np.zeros_like(x)), atol=1e-5)
    np.testing.assert_allclose(out["insertion"][:, 0], p(numpy_blur(x, rise_gkern(11, 5), fill)),
                               atol=1e-5)
    np.testing.assert_allclose(out["insertion"][:, -1], p(x), atol=1e-5)
