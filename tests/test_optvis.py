"""Feature visualization: objectives, parameterizations, transforms and the render loop."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxinterp as ji
from jaxinterp.optvis import param as P
from jaxinterp.optvis import transforms as T

O = ji.objectives


@pytest.fixture(scope="session")
def class_vis(default_model):
    """Every vgg-mini class visualized by its logit, all classes in one compiled call."""
    objs = ji.optvis.units(default_model, "logits", kind="logit")
    return ji.visualize_units(default_model, objs, size=64, steps=256, thresholds=(32, 256))


# --- the seed's evaluation and the must-shows -------------------------------------------------

@pytest.mark.slow
def test_class_visualizations_are_classified_as_their_class(default_model, class_vis):
    probs = jax.nn.softmax(default_model(class_vis.images[:, 0])[0])
    own = np.diag(np.asarray(probs))
    assert own.min() >= 0.99, dict(zip(default_model.classes, own.round(4)))


def test_objective_rises_during_optimization(class_vis):
    s = np.asarray(class_vis.scores[..., 0])  # [classes, steps]
    assert s.shape == (8, 256)
    assert (s[:, -16:].mean(1) > s[:, :16].mean(1) + 1.0).all(), s[:, ::32]


def test_snapshots_are_taken_at_the_thresholds(default_model, class_vis):
    assert class_vis.thresholds == (32, 256)
    assert class_vis.snapshots.shape == (8, 2, 1, 64, 64, 3)
    np.testing.assert_array_equal(class_vis.snapshots[:, -1], class_vis.images)
    early = jax.nn.softmax(default_model(class_vis.snapshots[:, 0, 0])[0])
    late = jax.nn.softmax(default_model(class_vis.images[:, 0])[0])
    assert np.diag(np.asarray(late)).mean() > np.diag(np.asarray(early)).mean()


@pytest.mark.parametrize("layer,channels", [("relu2_2", (3, 17)), ("relu3_2", (5, 40)),
                                            ("relu4_2", (9, 100))])
@pytest.mark.slow
def test_channel_visualization_beats_a_thousand_shapes_images(default_model, layer, channels):
    m = default_model
    objs = [O.channel(layer, c) for c in channels]
    r = ji.visualize_units(m, objs, size=64, steps=128, key=jax.random.key(3))
    fwd = jax.jit(lambda m, x: m(x, check=False)[1][m.resolve(layer)].mean((1, 2)))
    vis = np.asarray(fwd(m, r.images[:, 0]))[np.arange(len(channels)), list(channels)]
    best = np.zeros(len(channels))
    for start in range(0, 1000, 250):
        x = ji.data.shapes(jax.random.key(11), 250, start=start).images
        best = np.maximum(best, np.asarray(fwd(m, x))[:, list(channels)].max(0))
    assert (vis > best).all(), (vis, best)


# --- objectives -------------------------------------------------------------------------------

@pytest.fixture(scope="session")
def feats():
    k = jax.random.split(jax.random.key(0), 3)
    return {"features.9": jax.random.normal(k[0], (3, 4, 5, 6)),
            "logits": jax.random.normal(k[1], (3, 8)),
            "input": jax.random.uniform(k[2], (3, 7, 7, 3))}


def test_objective_repr_reads_as_the_expression():
    a, b = O.channel("features.9", 2), O.total_variation()
    assert repr(a - 1e-3 * b) == "channel('features.9', 2) - 0.001 * total_variation()"
    assert repr(-O.logit(3)) == "-logit(3)"
    assert repr(O.neuron("conv4_2", 1) + 2 * O.diversity("conv4_2")) == \
        "neuron('conv4_2', 1) + 2 * diversity('conv4_2')"
    assert repr(O.prob(1) * (O.logit(2) + O.logit(3))) == "prob(1) * (logit(2) + logit(3))"
    assert repr(O.neuron("fc", 4, 2, 3) / 4) == "0.25 * neuron('fc', 4, 2, 3)"
    assert repr(sum([O.logit(0), O.logit(1)])) == "logit(0) + logit(1)"


def test_objective_algebra_matches_the_scores(feats):
    a, b, c = O.channel("features.9", 2), O.logit(5), O.l1()
    np.testing.assert_allclose((a + 2 * b - c)(feats), a(feats) + 2 * b(feats) - c(feats),
                               rtol=1e-6)
    np.testing.assert_allclose((a * b)(feats), a(feats) * b(feats), rtol=1e-6)
    np.testing.assert_allclose((-(a / 4))(feats), -a(feats) / 4, rtol=1e-6)
    np.testing.assert_allclose(O.negative(b)(feats), -b(feats))
    np.testing.assert_allclose(sum([a, b, c])(feats), a(feats) + b(feats) + c(feats), rtol=1e-6)


def test_unit_objectives_read_the_right_numbers(feats):
    f, lg, x = np.asarray(feats["features.9"]), np.asarray(feats["logits"]), np.asarray(feats["input"])
    np.testing.assert_allclose(O.channel("features.9", 2)(feats), f[..., 2].mean((1, 2)), rtol=1e-6)
    np.testing.assert_allclose(O.neuron("features.9", 4)(feats), f[:, 2, 2, 4])  # centre (4//2, 5//2)
    np.testing.assert_allclose(O.neuron("features.9", 4, 1, 3)(feats), f[:, 1, 3, 4])
    np.testing.assert_allclose(O.deepdream("features.9")(feats), (f ** 2).mean((1, 2, 3)), rtol=1e-6)
    np.testing.assert_allclose(O.logit(5)(feats), lg[:, 5])
    p = np.exp(lg) / np.exp(lg).sum(1, keepdims=True)
    np.testing.assert_allclose(O.prob(5)(feats), p[:, 5], rtol=1e-5)
    np.testing.assert_allclose(O.l1()(feats), np.abs(x - 0.5).sum((1, 2, 3)), rtol=1e-5)
    np.testing.assert_allclose(O.l2()(feats), np.sqrt(1e-6 + ((x - 0.5) ** 2).sum((1, 2, 3))),
                               rtol=1e-5)
    tv = np.abs(np.diff(x, axis=1)).sum((1, 2, 3)) + np.abs(np.diff(x, axis=2)).sum((1, 2, 3))
    np.testing.assert_allclose(O.total_variation()(feats), tv, rtol=1e-5)


def test_direction_and_cosine_power(feats):
    f = np.asarray(feats["features.9"]).reshape(3, -1, 6)
    v = np.arange(6.0) - 2
    dot = f @ v
    np.testing.assert_allclose(O.direction("features.9", v)(feats), dot.mean(1), rtol=1e-5)
    cos = dot / (1e-6 + np.linalg.norm(f, axis=-1)) / (1e-6 + np.linalg.norm(v))
    want = (dot * np.maximum(0.1, cos) ** 2).mean(1)
    np.testing.assert_allclose(O.direction("features.9", v, cossim_pow=2)(feats), want, rtol=1e-4)


def test_random_direction_is_a_seeded_unit_vector(default_model):
    a = O.random_direction(default_model, "relu4_2", jax.random.key(5))
    b = O.random_direction(default_model, "relu4_2", jax.random.key(5))
    c = O.random_direction(default_model, "relu4_2", jax.random.key(6))
    assert a.args[0].shape == (128,)
    np.testing.assert_allclose(np.linalg.norm(a.args[0]), 1.0, rtol=1e-5)
    np.testing.assert_array_equal(a.args[0], b.args[0])
    assert np.abs(np.asarray(a.args[0]) - np.asarray(c.args[0])).max() > 0.01


def test_diversity_sums_to_lucids_batch_diversity(feats):
    f = np.asarray(feats["features.9"], np.float64).reshape(3, -1, 6)
    grams = np.einsum("bpc,bpd->bcd", f, f)
    grams /= np.linalg.norm(grams.reshape(3, -1), axis=1)[:, None, None]
    lucid = -sum((grams[i] * grams[j]).sum() for i in range(3) for j in range(3) if i != j) / 3
    scores = np.asarray(O.diversity("features.9")(feats))
    np.testing.assert_allclose(scores.sum(), lucid, rtol=1e-5)
    assert scores.shape == (3,)


def test_objective_errors_name_the_problem(default_model):
    with pytest.raises(ValueError, match="unknown layer 'conv9_9'"):
        O.channel("conv9_9", 0).check(default_model)
    with pytest.raises(ValueError, match="has 128 channels"):
        O.channel("relu4_2", 128).check(default_model)
    with pytest.raises(ValueError, match="has 8 channels"):
        O.logit(8).check(default_model)
    with pytest.raises(ValueError, match="vector has 5 entries"):
        O.direction("relu4_2", np.ones(5)).check(default_model)
    with pytest.raises(ValueError, match="one structure"):
        O.stack([O.channel("relu4_2", 0), O.channel("relu3_2", 0)])
    with pytest.raises(TypeError, match="objective must be"):
        ji.visualize(default_model, "channel", steps=1)
    with pytest.raises(ValueError, match="both y and x"):
        O.neuron("relu4_2", 0, y=1)


def test_stacked_objectives_vmap_to_the_single_scores(feats):
    objs = [O.channel("features.9", c) for c in range(6)]
    stacked = O.stack(objs)
    got = jax.vmap(lambda o: o(feats))(stacked)
    want = np.stack([o(feats) for o in objs])
    np.testing.assert_allclose(got, want, rtol=1e-6)


# --- parameterizations --------------------------------------------------------------------------

def _radial_slope(images):
    """Log-log slope of the mean FFT amplitude against spatial frequency."""
    a = np.abs(np.fft.fft2(np.asarray(images), axes=(1, 2))).mean((0, 3))
    h, w = a.shape
    f = np.sqrt(np.fft.fftfreq(h)[:, None] ** 2 + np.fft.fftfreq(w)[None] ** 2)
    bins = np.geomspace(2.0 / h, 0.5, 12)
    idx = np.digitize(f, bins)
    centres = [f[idx == i].mean() for i in range(1, len(bins))]
    amps = [a[idx == i].mean() for i in range(1, len(bins))]
    return np.polyfit(np.log(centres), np.log(amps), 1)[0]


@pytest.mark.parametrize("kind,decay,slope", [("fft", 1.0, -1.0), ("fft", 2.0, -2.0),
                                               ("pixel", None, 0.0)])
def test_fft_spectrum_falls_off_as_one_over_f(kind, decay, slope):
    kw = {"decay_power": decay} if decay else {}
    p = P.image_param(kind, 64, **kw)
    images = p.linear(p.init(jax.random.key(0), 32))
    assert abs(_radial_slope(images) - slope) < 0.15


def test_parameterizations_map_to_valid_rgb_and_zero_is_gray():
    for kind in ("fft", "pixel"):
        for decorrelate in (True, False):
            for sigmoid in (True, False):
                p = P.image_param(kind, (24, 30), decorrelate=decorrelate, sigmoid=sigmoid)
                params = p.init(jax.random.key(1), 2)
                img = p(params * 1000)
                assert img.shape == (2, 24, 30, 3)
                assert float(img.min()) >= 0 and float(img.max()) <= 1
                if sigmoid:
                    np.testing.assert_allclose(p(jnp.zeros_like(params)), 0.5, atol=1e-6)
    assert np.isclose(np.linalg.norm(P.COLOR_DECORRELATION, axis=0).max(), 1.0)


def test_clipping_parameterization_passes_gradients_straight_through():
    p = P.image_param("pixel", 4, sigmoid=False, decorrelate=False)
    g = jax.grad(lambda q: p(q).sum())(jnp.full((1, 4, 4, 3), 3.0))  # far outside [0, 1]
    np.testing.assert_allclose(g, 1.0)


def test_param_errors():
    with pytest.raises(ValueError, match="param must be one of pixel, fft"):
        P.image_param("cppn", 8)
    with pytest.raises(ValueError, match="size must be"):
        P.image_param("fft", (8, 0))


# --- transforms ---------------------------------------------------------------------------------

@pytest.fixture(scope="session")
def image():
    return ji.data.shapes(jax.random.key(2), 1, size=48).images[0]


def test_transforms_deterministic_per_key_and_different_across_the_batch(image):
    x = jnp.stack([image] * 4)
    apply = jax.jit(lambda k, x: T.apply("standard", k, x))
    a = apply(jax.random.key(7), x)
    b = apply(jax.random.key(7), x)
    c = apply(jax.random.key(8), x)
    np.testing.assert_array_equal(a, b)
    assert a.shape == (4, 60, 60, 3)  # 48 + 2 * 12 - 8 - 4
    diffs = [float(jnp.abs(a[i] - a[j]).max()) for i in range(4) for j in range(i)]
    assert min(diffs) > 0.1
    assert float(jnp.abs(a - c).max()) > 0.1
    # image i draws from fold_in(key, i): the first image does not depend on the batch size
    np.testing.assert_allclose(apply(jax.random.key(7), x[:1])[0], a[0], atol=1e-6)


def test_jitter_offsets_cover_zero_to_d(image):
    x = jnp.arange(20.0)[None, :, None, None] * jnp.ones((1, 20, 20, 3))
    firsts = {float(T.apply((T.jitter(3),), jax.random.key(k), x)[0, 0, 0, 0]) for k in range(60)}
    assert firsts == {0.0, 1.0, 2.0, 3.0}


def test_rotate_and_scale_resample_exactly(image):
    x = np.asarray(image)
    rot = lambda a: T.random_rotate((a,))(jax.random.key(0), image)  # noqa: E731
    np.testing.assert_allclose(rot(0), x, atol=1e-6)
    np.testing.assert_allclose(rot(90), np.rot90(x, 1), atol=1e-5)  # counterclockwise
    np.testing.assert_allclose(rot(-90), np.rot90(x, -1), atol=1e-5)
    np.testing.assert_allclose(T.random_scale((1.0,))(jax.random.key(0), image), x, atol=1e-6)
    z = np.asarray(T.random_scale((2.0,))(jax.random.key(0), image))
    # zoom x2 about the centre: output pixel p reads input c + (p - c) / 2
    c = 23.5
    for py, px in [(10, 30), (40, 5)]:
        sy, sx = c + (py - c) / 2, c + (px - c) / 2
        y0, x0 = int(np.floor(sy)), int(np.floor(sx))
        fy, fx = sy - y0, sx - x0
        want = ((1 - fy) * (1 - fx) * x[y0, x0] + (1 - fy) * fx * x[y0, x0 + 1]
                + fy * (1 - fx) * x[y0 + 1, x0] + fy * fx * x[y0 + 1, x0 + 1])
        np.testing.assert_allclose(z[py, px], want, atol=1e-5)


def test_composed_scale_and_rotate_equal_the_two_resamplings_in_sequence(image):
    ts = (T.random_scale((1.25,)), T.random_rotate((90,)))
    once = T.apply(ts, jax.random.key(0), image[None])[0]
    k = jax.random.key(0)  # a single choice: any key
    twice = ts[1](k, ts[0](k, image))
    inner = (slice(12, 36), slice(12, 36))  # away from the clamped border
    np.testing.assert_allclose(np.asarray(once)[inner], np.asarray(twice)[inner], atol=1e-5)


def test_transform_errors():
    with pytest.raises(ValueError, match="transforms must be one of standard"):
        T.resolve("lucid")
    with pytest.raises(TypeError, match="callables"):
        T.resolve([3])


# --- the render loop ----------------------------------------------------------------------------

def test_render_compiles_once_for_any_unit_and_learning_rate(mini):
    from jaxinterp.optvis import render

    kw = {"size": 32, "steps": 2, "transforms": "jitter"}
    ji.visualize(mini, O.channel("relu4_2", 0), **kw)
    before = render._render_jit._cache_size()
    ji.visualize(mini, O.channel("relu4_2", 5), lr=0.1, key=jax.random.key(4), **kw)
    assert render._render_jit._cache_size() == before


@pytest.mark.slow
def test_units_in_one_call_equal_separate_calls_and_chunks(mini):
    kw = {"size": 32, "steps": 6, "transforms": "jitter", "batch": 2}
    objs = [O.channel("relu3_2", c) for c in (1, 2, 3)]
    key = jax.random.key(9)
    together = ji.visualize_units(mini, objs, key=key, **kw)
    chunked = ji.visualize_units(mini, objs, key=key, batch_size=2, **kw)
    np.testing.assert_allclose(together.images, chunked.images, atol=1e-5)
    for k, o in enumerate(objs):
        alone = ji.visualize(mini, o, key=jax.random.fold_in(key, k), **kw)
        np.testing.assert_allclose(together.images[k], alone.images, atol=1e-5)
        np.testing.assert_allclose(together.scores[k], alone.scores, rtol=1e-4, atol=1e-5)


@pytest.mark.slow
def test_negative_objective_drives_the_unit_down(default_model):
    e9 = np.eye(128)[9]  # direction along one channel = that channel's mean; one compilation
    objs = [O.direction("relu4_2", e9), O.direction("relu4_2", -e9)]
    r = ji.visualize_units(default_model, objs, size=48, steps=48, key=jax.random.key(1))
    up, down = np.asarray(O.channel("relu4_2", 9)(default_model(r.images[:, 0])[1]))
    assert up > down + 0.5
    np.testing.assert_allclose(O.negative(O.channel("relu4_2", 9))(default_model(r.images[:, 0])[1]),
                               -np.array([up, down]), rtol=1e-6)


@pytest.mark.slow
def test_diversity_makes_the_batch_differ(default_model):
    kw = {"size": 48, "steps": 32, "batch": 3, "key": jax.random.key(2), "transforms": "jitter"}
    obj = O.channel("relu4_2", 9)
    plain = ji.visualize(default_model, obj, **kw)
    diverse = ji.visualize(default_model, obj + 20 * O.diversity("relu4_2"), **kw)
    div = O.diversity("relu4_2")
    d_plain = float(div(default_model(plain.images)[1]).sum())
    d_diverse = float(div(default_model(diverse.images)[1]).sum())
    assert d_diverse > d_plain


def test_yosinski_regularizers(default_model):
    y = ji.Yosinski(norm_pct=50)
    params = jax.random.normal(jax.random.key(0), (2, 16, 16, 3))
    out = y(0, params, params)
    assert np.isclose(float((out == 0).all(-1).mean()), 0.5, atol=0.01)
    out = ji.Yosinski(contrib_pct=25)(0, params, jnp.ones_like(params))
    assert np.isclose(float((out == 0).all(-1).mean()), 0.25, atol=0.01)
    blur = ji.Yosinski(blur_every=2, blur_sigma=1.0)
    tv = lambda p: float(jnp.abs(jnp.diff(p, axis=1)).sum())  # noqa: E731
    assert tv(blur(1, params, params)) < 0.5 * tv(params)  # step 1 -> the 2nd step: blurred
    np.testing.assert_array_equal(blur(0, params, params), params)
    np.testing.assert_allclose(ji.Yosinski(decay=0.1)(0, params, params), 0.9 * params, rtol=1e-6)
    r = ji.visualize(default_model, O.channel("relu4_2", 9), size=16, steps=4, param="pixel",
                     transforms="none", regularize=ji.Yosinski(blur_every=2, norm_pct=10))
    assert np.isfinite(np.asarray(r.images)).all()
    with pytest.raises(ValueError, match="param='pixel'"):
        ji.visualize(default_model, O.logit(0), steps=2, regularize=ji.Yosinski(decay=0.1))


def test_render_option_errors(default_model):
    m = default_model
    with pytest.raises(ValueError, match="needs at least 8x8"):
        ji.visualize(m, O.logit(0), size=4, steps=2, transforms="none")
    with pytest.raises(ValueError, match="thresholds must be increasing"):
        ji.visualize(m, O.logit(0), size=16, steps=4, thresholds=(5,))
    with pytest.raises(ValueError, match="steps must be a positive int"):
        ji.visualize(m, O.logit(0), steps=0)
    with pytest.raises(TypeError, match="unknown options"):
        ji.visualize_units(m, [O.logit(0)], iterations=3)
