"""Analytic truths of attribution methods, and their input errors."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxinterp as ji
from jaxinterp.rules import deconv_relu, guided_relu


@pytest.fixture(scope="session")
def linear():
    """vgg-mini made affine in its input: identity activations and average pooling."""
    m = ji.load_model("vgg-mini", key=jax.random.key(4), pool="avg")
    return m.with_act(lambda v: v)


@pytest.fixture(scope="session")
def linear_rows(linear):
    """Weight rows of the affine model, measured from basis images: f(e_i) - f(0)."""
    n = 16 * 16 * 3
    basis = jnp.eye(n, dtype=jnp.float32).reshape(n, 16, 16, 3)
    f = jax.jit(lambda m, x: m(x, check=False)[0])
    zero = f(linear, jnp.zeros((1, 16, 16, 3)))
    return (f(linear, basis) - zero).T.reshape(8, 16, 16, 3)  # [class, H, W, 3]


def test_gradient_of_linear_model_is_its_weight_row(linear, linear_rows):
    x = jax.random.uniform(jax.random.key(0), (2, 16, 16, 3))
    c = np.array([2, 5])
    scale = float(jnp.abs(linear_rows).max())
    np.testing.assert_allclose(ji.saliency(linear, x, c), linear_rows[c], atol=1e-4 * scale)
    np.testing.assert_allclose(ji.input_x_gradient(linear, x, c), x * linear_rows[c],
                               atol=1e-4 * scale)
    # on an affine model the path integral is exact for any rule and any number of steps
    for method in ("gausslegendre", "riemann_left", "riemann_middle", "trapezoid"):
        np.testing.assert_allclose(ji.integrated_gradients(linear, x, c, steps=3, method=method),
                                   x * linear_rows[c], atol=1e-4 * scale)
    # Captum's trapezoid weights sum to (n - 1) / n; kept for parity, documented
    np.testing.assert_allclose(ji.integrated_gradients(linear, x, c, steps=3,
                                                       method="riemann_trapezoid"),
                               x * linear_rows[c] * 2 / 3, atol=1e-4 * scale)


def test_custom_vjp_rules():
    x = jnp.array([-2.0, -0.5, 0.5, 2.0])
    g = jnp.array([1.0, -1.0, -1.0, 1.0])
    np.testing.assert_array_equal(guided_relu(x), jax.nn.relu(x))
    np.testing.assert_array_equal(deconv_relu(x), jax.nn.relu(x))
    _, vjp = jax.vjp(guided_relu, x)
    np.testing.assert_array_equal(vjp(g)[0], [0, 0, 0, 1])  # input > 0 and gradient > 0
    _, vjp = jax.vjp(deconv_relu, x)
    np.testing.assert_array_equal(vjp(g)[0], [1, 0, 0, 1])  # gradient > 0, any input


def _completeness(m, x, y, steps):
    attr, delta = ji.integrated_gradients(m, x, y, steps=steps, return_delta=True, batch_size=64)
    f = lambda x: jnp.take_along_axis(m(x)[0], y[:, None], 1)[:, 0]  # noqa: E731
    gap = f(x) - f(jnp.zeros_like(x))
    np.testing.assert_allclose(attr.sum((1, 2, 3)) - gap, delta, rtol=1e-4, atol=1e-4)
    return np.abs(np.asarray(delta / gap))


def test_integrated_gradients_completeness_smooth_network(default_model):
    # The trained weights with softplus and average pooling: a smooth integrand, on which
    # Gauss-Legendre converges fast.
    from jaxinterp.model import Model

    smooth = Model(default_model.module.clone(act=jax.nn.softplus, pool="avg"),
                   default_model.variables, default_model.meta)
    b = ji.data.shapes(jax.random.key(9), 4)
    assert np.all(_completeness(smooth, b.images, b.labels, 64) <= 0.01)


@pytest.mark.slow
def test_integrated_gradients_completeness_trained_relu_network(default_model):
    # ReLU and max-pool kinks along the path limit any quadrature: measured |delta| / |gap| up
    # to 2.8 % at 64 Gauss-Legendre steps on these images, 0.26 % at 256.
    b = ji.data.shapes(jax.random.key(9), 4)
    err64 = _completeness(default_model, b.images, b.labels, 64)
    err256 = _completeness(default_model, b.images, b.labels, 256)
    assert np.all(err256 <= 0.01)
    assert err256.mean() < err64.mean() and np.all(err64 <= 0.05)


def test_grad_cam_is_proportional_to_cam_on_gap_model(default_model):
    b = ji.data.shapes(jax.random.key(10), 8)
    gc = np.asarray(ji.grad_cam(default_model, b.images, b.labels, relu=False, upsample=False))
    c = np.asarray(ji.cam(default_model, b.images, b.labels, upsample=False))
    assert np.corrcoef(gc.ravel(), c.ravel())[0, 1] >= 0.999
    # exactly: d logit / d A = w / (h w) everywhere, so Grad-CAM = CAM / (h w)
    np.testing.assert_allclose(gc * gc.shape[1] * gc.shape[2], c, rtol=1e-4,
                               atol=1e-5 * np.abs(c).max())


def test_smooth_grad_with_zero_noise_is_the_base_method(mini):
    b = ji.data.shapes(jax.random.key(11), 2)
    base = np.asarray(ji.guided_backprop(mini, b.images, b.labels))
    sg = functools.partial(ji.smooth_grad, mini, b.images, b.labels, method=ji.guided_backprop,
                           samples=3, noise=0.0)
    np.testing.assert_allclose(sg(), base, rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(sg(kind="smoothgrad_sq"), base ** 2, rtol=1e-5, atol=1e-12)
    np.testing.assert_allclose(sg(kind="vargrad"), 0, atol=1e-6 * (base ** 2).max())


def test_smooth_grad_noise_scale_is_relative_to_each_images_range(mini):
    # two images with ranges 1.0 and 0.25: each gets its own sigma (a batch-wide range would
    # give both the larger one)
    x = np.asarray(ji.data.shapes(jax.random.key(11), 2).images)
    x = np.stack([(x[0] - x[0].min()) / np.ptp(x[0]), 0.5 + 0.25 * (x[1] - x[1].min()) / np.ptp(x[1])])
    f = lambda m, x, t: x  # noqa: E731 — the "attribution" is the noisy input itself
    var = ji.smooth_grad(mini, x, 0, method=f, samples=400, noise=0.1, kind="vargrad")
    for i, span in enumerate((1.0, 0.25)):
        assert abs(float(jnp.sqrt(var[i].mean())) / (0.1 * span) - 1) < 0.05, i


def test_redirected_relu_matches_lucids_definition():
    from jaxinterp.rules import redirected_relu

    def lucid(x, g):  # lucid/misc/redirected_relu_grad.py, in numpy
        relu_grad = np.where(x < 0, 0, g)
        redirected = np.where((x < 0) & (g > 0), 0, g)
        mag = np.linalg.norm(relu_grad.reshape(len(x), -1), axis=1)
        return np.where((mag > 0).reshape(-1, 1, 1), relu_grad, redirected)

    rng = np.random.default_rng(0)
    x = rng.normal(size=(4, 5, 3)).astype(np.float32)
    x[1] = -np.abs(x[1])  # example 1: every input negative, nothing gets through a plain ReLU
    x[2] = -np.abs(x[2]) - 1  # example 2 as well
    g = rng.normal(size=x.shape).astype(np.float32)
    g[3] = np.where(x[3] > 0, 0, g[3])  # example 3: gradient only where the input is negative
    np.testing.assert_array_equal(redirected_relu(x), np.maximum(x, 0))
    got = np.asarray(jax.vjp(redirected_relu, x)[1](g)[0])
    np.testing.assert_array_equal(got, lucid(x, g))
    assert np.any(got[1] != 0) and np.all(got[0] == np.where(x[0] < 0, 0, g[0]))


def test_callable_target_reaches_deep_units(mini):
    b = ji.data.shapes(jax.random.key(12), 2)
    unit = ji.targets.unit("conv4_2", 5)
    got = ji.saliency(mini, b.images, unit)
    want = jax.grad(lambda x: mini(x, check=False)[1]["conv4_2"][..., 5].mean((1, 2)).sum())(b.images)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-8)
    assert ji.targets.unit("conv4_2", 5) == unit  # equal targets: no recompilation


def test_occlusion_matches_a_direct_loop(mini):
    b = ji.data.shapes(jax.random.key(13), 1)
    x, y = b.images, int(b.labels[0])
    got = np.asarray(ji.occlusion(mini, x, y, window=(32, 32), stride=(16, 16), baseline=0.5))
    score = lambda z: float(mini(z)[0][0, y])  # noqa: E731
    total, count = np.zeros((64, 64)), np.zeros((64, 64))
    for i in range(0, 33, 16):
        for j in range(0, 33, 16):
            z = np.array(x)
            z[:, i:i + 32, j:j + 32] = 0.5
            total[i:i + 32, j:j + 32] += score(x) - score(z)
            count[i:i + 32, j:j + 32] += 1
    np.testing.assert_allclose(got[0], total / count, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("call, match", [
    (lambda m, x, y: ji.grad_cam(m, x, y, layer="conv9_1"), "unknown layer 'conv9_1'"),
    (lambda m, x, y: ji.grad_cam(m, x, y, layer="fc"), "needs a spatial layer"),
    (lambda m, x, y: ji.saliency(m, x, 8), r"target \[8, 8\] out of range.*8 classes"),
    (lambda m, x, y: ji.saliency(m, x, np.array([1, 2, 3])), r"shape \(2,\)"),
    (lambda m, x, y: ji.saliency(m, x, 1.5), "int class index"),
    (lambda m, x, y: ji.integrated_gradients(m, x, y, steps=0), "steps must be an int >= 1"),
    (lambda m, x, y: ji.integrated_gradients(m, x, y, method="trapezoid", steps=1),
     "steps must be an int >= 2"),
    (lambda m, x, y: ji.integrated_gradients(m, x, y, steps=2.5), "steps must be an int"),
    (lambda m, x, y: ji.integrated_gradients(m, x, y, baseline=np.nan), "baseline must be finite"),
    (lambda m, x, y: ji.occlusion(m, x, y, baseline=np.zeros((5, 5))), "does not broadcast"),
    (lambda m, x, y: ji.smooth_grad(m, x, y, noise=np.nan), "noise must be finite"),
    (lambda m, x, y: ji.smooth_grad(m, x, y, noise=-0.1), "noise must be >= 0"),
    (lambda m, x, y: ji.smooth_grad(m, x, y, key="seed"), "key must be a PRNG key"),
    (lambda m, x, y: ji.saliency(m, x[:0], y[:0]), r"empty batch \(N = 0\)"),
    (lambda m, x, y: ji.saliency(m, x, ji.targets.unit("relu4_2", 999)),
     r"unit channel 999 out of range: relu4_2 has 128 channels"),
    (lambda m, x, y: ji.saliency(m, x, ji.targets.unit("relu4_2", 1, 8, 99)),
     r"position \(8, 99\) out of range"),
    (lambda m, x, y: ji.targets.unit("relu4_2", -1), "non-negative int"),
    (lambda m, x, y: ji.integrated_gradients(m, x, y, method="simpson"), "method must be one of"),
    (lambda m, x, y: ji.integrated_gradients(m, x, y, baseline=np.zeros((3, 3))), "does not broadcast"),
    (lambda m, x, y: ji.occlusion(m, x, y, window=(80, 8)), "larger than the image"),
    (lambda m, x, y: ji.occlusion(m, x, y, stride=0), "stride must be an int >= 1"),
    (lambda m, x, y: ji.smooth_grad(m, x, y, kind="max"), "kind must be one of"),
    (lambda m, x, y: ji.smooth_grad(m, x, y, samples=0), "samples must be an int >= 1"),
    (lambda m, x, y: ji.smooth_grad(m, x, y, batch_size=0), "batch_size must be a positive"),
    (lambda m, x, y: ji.cam(m, x, ji.targets.unit("fc", 1)), "class targets only"),
    (lambda m, x, y: ji.saliency(m, x[0], y), r"rank 4.*x\[None\]"),
    (lambda m, x, y: ji.guided_backprop(m, x.transpose(0, 3, 1, 2), y), "channels last"),
    (lambda m, x, y: ji.occlusion(m, x * 3, y), r"values in \[0, 1\]"),
])
def test_bad_input_errors(mini, call, match):
    b = ji.data.shapes(jax.random.key(14), 2)
    with pytest.raises((ValueError, TypeError), match=match):
        call(mini, np.asarray(b.images), np.asarray(b.labels))


def test_cam_needs_gap_head():
    m = ji.load_model("vgg11", key=jax.random.key(0), num_classes=4, hidden=8)
    with pytest.raises(ValueError, match="global-average-pool head"):
        ji.cam(m, np.zeros((1, 32, 32, 3), np.float32), 0)


@pytest.mark.slow  # 18-25 s end to end; CI's slow step runs it
def test_numpy_ints_bf16_and_legacy_keys_are_accepted(mini):
    b = ji.data.shapes(jax.random.key(15), 2)
    x, y = b.images, b.labels
    np.testing.assert_allclose(ji.integrated_gradients(mini, x, y, steps=np.int64(4)),
                               ji.integrated_gradients(mini, x, y, steps=4))
    sg = functools.partial(ji.smooth_grad, mini, x, y, samples=np.int32(2))
    np.testing.assert_array_equal(sg(key=jax.random.PRNGKey(3)),
                                  sg(key=jax.random.wrap_key_data(jax.random.PRNGKey(3))))
    np.testing.assert_array_equal(sg(key=7), sg(key=jax.random.key(7)))
    full = np.asarray(ji.occlusion(mini, x, y, window=(32, 32), stride=(32, 32)))
    half = np.asarray(ji.occlusion(mini, x.astype(jnp.bfloat16), y, window=(32, 32),
                                   stride=(32, 32)))
    assert np.corrcoef(full.ravel(), half.ravel())[0, 1] > 0.99  # bf16 images, f32 weights
