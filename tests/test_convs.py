"""`convs.explicit_conv`: the written-out input gradient equals JAX's for every stride, kernel
and padding; ResNet's `conv="explicit"` (what looping methods run) gives the same attributions."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxinterp as ji
from jaxinterp.attribution import core
from jaxinterp.models.convs import explicit_conv, explicit_conv_general_dilated, loop_conv

# (H, W, kernel, stride, padding): ResNet's 7x7/2, 3x3/2, 1x1/2 and 1x1, 3x3/1 convolutions,
# odd and even sides, asymmetric padding, a stride larger than the kernel (phases no tap
# reaches), and stride 3
CASES = [(10, 11, (7, 7), (2, 2), ((3, 3), (3, 3))),
         (9, 8, (3, 3), (2, 2), ((1, 1), (1, 1))),
         (8, 7, (1, 1), (2, 2), ((0, 0), (0, 0))),
         (6, 5, (1, 1), (1, 1), ((0, 0), (0, 0))),
         (7, 6, (3, 3), (1, 1), ((1, 1), (1, 1))),
         (9, 10, (3, 2), (1, 2), ((1, 0), (0, 2))),
         (11, 9, (2, 2), (3, 3), ((0, 1), (1, 0))),
         (12, 13, (5, 5), (3, 2), ((2, 2), (1, 2))),
         (7, 7, (1, 1), (3, 3), ((1, 1), (0, 0)))]


@pytest.mark.parametrize("h,w,size,stride,padding", CASES)
def test_explicit_gradients_equal_jax(h, w, size, stride, padding):
    rng = np.random.default_rng(h * w)
    with jax.enable_x64(True):
        x = jnp.asarray(rng.normal(size=(2, h, w, 3)))
        k = jnp.asarray(rng.normal(size=size + (3, 4)))
        ref = lambda x, k: jax.lax.conv_general_dilated(  # noqa: E731
            x, k, stride, padding, dimension_numbers=("NHWC", "HWIO", "NHWC"))
        y, vjp = jax.vjp(ref, x, k)
        ye, vjp_e = jax.vjp(lambda x, k: explicit_conv(x, k, stride, padding), x, k)
        g = jnp.asarray(rng.normal(size=y.shape))
        np.testing.assert_allclose(ye, y, rtol=0, atol=1e-12)  # 1x1: a matmul's rounding
        for ours, theirs in zip(vjp_e(g), vjp(g)):
            np.testing.assert_allclose(ours, theirs, rtol=0, atol=1e-12)


def test_flax_adapter_routes_plain_convs_and_passes_the_rest_through():
    x = jnp.asarray(np.random.default_rng(0).normal(size=(1, 8, 8, 4)), jnp.float32)
    k = jnp.asarray(np.random.default_rng(1).normal(size=(3, 3, 2, 4)), jnp.float32)
    dims = jax.lax.conv_dimension_numbers(x.shape, k.shape, ("NHWC", "HWIO", "NHWC"))
    grouped = explicit_conv_general_dilated(x, k, (1, 1), ((1, 1), (1, 1)),
                                            dimension_numbers=dims, feature_group_count=2)
    expect = jax.lax.conv_general_dilated(x, k, (1, 1), ((1, 1), (1, 1)), dimension_numbers=dims,
                                          feature_group_count=2)
    np.testing.assert_array_equal(grouped, expect)
    plain = jax.make_jaxpr(lambda x: explicit_conv_general_dilated(
        x, k[:, :, :2].repeat(2, 2), (2, 2), ((1, 1), (1, 1)), dimension_numbers=dims))(x)
    assert "custom_vjp_call" in str(plain)


@pytest.fixture(scope="module")
def resnet():
    m = ji.load_model("resnet18", key=0)
    x = np.random.default_rng(2).random((1, 32, 40, 3), dtype=np.float32)
    return m, x


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="the explicit form is the CPU's")
def test_resnet_loops_run_explicit_convs_and_other_models_are_unchanged(resnet, mini):
    m, _ = resnet
    assert m.apply.module.conv == "dot"
    assert core.loop_ready(m, 2).apply.module.conv == loop_conv() == "explicit"
    assert core.loop_ready(m, None) is m
    # JAX's own gradient of a strided convolution is an input-dilated convolution; the
    # explicit form has none
    x = jnp.zeros((1, 32, 32, 3))
    for method, kwargs in (("integrated_gradients", {"steps": 4}),
                           ("smooth_grad", {"key": jax.random.key(0), "samples": 4})):
        f = getattr(ji, method)
        for bs, dilated in ((None, True), (2, False)):
            jaxpr = str(jax.make_jaxpr(lambda x: f(m, x, 3, batch_size=bs, **kwargs))(x))
            assert ("lhs_dilation=(2, 2)" in jaxpr) == dilated, (method, bs)
    wrapped = ji.wrap(lambda p, x: (x * p).mean((1, 2)), jnp.ones(3))
    assert wrapped.with_conv("explicit") is wrapped
    with pytest.raises(ValueError, match="conv must be one of xla, dot, explicit"):
        m.with_conv("winograd")


@pytest.mark.parametrize("name", ["saliency", "guided_backprop", "smooth_grad"])
def test_resnet_explicit_attributions_equal_xla(resnet, name):
    m, x = resnet
    # smooth_grad: in chunks (the loop runs the explicit form) against one vmapped batch (XLA's)
    kwargs = {"key": jax.random.key(0), "samples": 2} if name == "smooth_grad" else {}
    with jax.enable_x64(True):
        m64 = m.with_variables(jax.tree_util.tree_map(lambda v: jnp.asarray(v, jnp.float64),
                                                      m.variables))
        x64 = x.astype(np.float64)
        f = getattr(ji, name)
        a = np.asarray(f(m64.with_conv("xla"), x64, 3, **kwargs))
        others = [f(m64, x64, 3, **kwargs)]  # the default: 1x1 convolutions as matmuls
        others.append(f(m64, x64, 3, batch_size=1, **kwargs) if name == "smooth_grad"
                      else f(m64.with_conv("explicit"), x64, 3))
        assert a.dtype == np.float64
        for b in others:
            np.testing.assert_allclose(np.asarray(b), a, rtol=0, atol=1e-10 * np.abs(a).max())


@pytest.mark.parametrize("h,w", [(8, 8), (7, 9)])
def test_resnet_max_pool_taps_equal_reduce_window_with_ties(h, w):
    from jaxinterp.models.resnet import max_pool_3x3_s2

    # after a ReLU most of a map is tied at 0: the gradient goes to each window's first
    # maximum (row-major), as XLA's select_and_scatter and PyTorch route it
    rng = np.random.default_rng(h)
    x = jnp.asarray(np.maximum(rng.integers(-3, 3, size=(2, h, w, 3)), 0), jnp.float32)
    ref = lambda x: jax.lax.reduce_window(  # noqa: E731
        x, -jnp.inf, jax.lax.max, (1, 3, 3, 1), (1, 2, 2, 1), ((0, 0), (1, 1), (1, 1), (0, 0)))
    y, vjp = jax.vjp(ref, x)
    ours, vjp_ours = jax.vjp(max_pool_3x3_s2, x)
    g = jnp.asarray(rng.normal(size=y.shape), jnp.float32)
    np.testing.assert_array_equal(ours, y)
    np.testing.assert_array_equal(vjp_ours(g)[0], vjp(g)[0])
    inf = x.at[0, 1, 1, 0].set(jnp.inf)  # values as reduce_window's, infinities included
    np.testing.assert_array_equal(max_pool_3x3_s2(inf), ref(inf))


def test_resnet_pool_variants_and_relevance_model(resnet):
    from jaxinterp.attribution.relevance import relevance_model

    m, x = resnet
    assert m.resnet.pool == "max"
    window = m.with_pool("max_window")
    assert "name=max_pool_3x3_s2" in str(jax.make_jaxpr(lambda x: m(x)[0])(x))
    assert "name=max_pool_3x3_s2" not in str(jax.make_jaxpr(lambda x: window(x)[0])(x))
    np.testing.assert_array_equal(window(x)[0], m(x)[0])
    assert relevance_model(m).resnet.pool == "max_window"
    with pytest.raises(ValueError, match="pool must be one of max, max_window"):
        m.with_pool("avg")


def test_resnet_relevance_is_the_same_however_it_is_wrapped(resnet):
    # a ResNet wrapped as a plain function keeps conv="dot" and the tap max pool: the rules see
    # its 1x1 matmuls as convolutions and its max pool as one reduce_window_max
    m, x = resnet
    module = m.resnet
    plain = ji.wrap(lambda p, x: module.apply(p, x), m.variables, preprocess=m.preprocess_fn)
    for method, kwargs in (("lrp", {"composite": "epsilon_gamma_box"}), ("deeplift", {})):
        a = np.asarray(getattr(ji, method)(m, x, 3, **kwargs))
        b = np.asarray(getattr(ji, method)(plain, x, 3, **kwargs))
        np.testing.assert_allclose(b, a, rtol=0, atol=1e-5 * np.abs(a).max())
