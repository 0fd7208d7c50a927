"""Incremental occlusion: box-by-box recomputation equals the full forward pass."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxinterp as ji
from jaxinterp.attribution import incremental as inc


@pytest.fixture(scope="session")
def small_vgg():
    """vgg11_bn with a torchvision classifier head (adaptive pool, fc6-8), 8 hidden units."""
    return ji.init_model("vgg11_bn", key=jax.random.key(3), num_classes=5, hidden=8)


def test_plan_boxes_grow_by_conv_and_halve_by_pool():
    m = ji.init_model("vgg-mini", key=jax.random.key(0))
    steps = inc.plan(m.specs, (64, 64), (16, 16))
    boxes = [(m.specs[s.index].alias, s.box[0], s.size[0]) for s in steps]
    # conv +2 per side pair, pool -> box // 2 + 1; stops before the box covers the map
    assert boxes[:4] == [("conv1_1", 18, 64), ("bn1_1", 18, 64), ("relu1_1", 18, 64),
                         ("pool1", 10, 32)]
    assert [b for b in boxes if b[0].startswith("conv")] == [
        ("conv1_1", 18, 64), ("conv2_1", 12, 32), ("conv2_2", 14, 32), ("conv3_1", 10, 16),
        ("conv3_2", 12, 16)]
    assert boxes[-1] == ("pool3", 7, 8)  # conv4_1 would cover the 8x8 map: runs in full
    assert inc.plan(m.specs, (64, 64), (64, 64)) == ()
    odd = inc.plan(m.specs, (62, 62), (8, 8))  # 62 -> 31: the pool after 31 is odd, stop there
    assert [m.specs[s.index].alias for s in odd][-1] == "relu2_2"


@pytest.mark.parametrize("size, window, at", [
    ((64, 64), (16, 16), (48, 0)), ((64, 64), (7, 5), (31, 59)), ((62, 58), (9, 4), (53, 20)),
])
@pytest.mark.slow
def test_perturbed_forward_equals_full_pass_at_every_layer(mini, size, window, at):
    x = jax.random.uniform(jax.random.key(4), (2, *size, 3))
    crop = jax.random.uniform(jax.random.key(5), (2, *window, 3))
    logits, feats = mini(x)
    got_logits, got = inc.perturbed_forward(
        mini, inc.plan(mini.specs, size, window), mini.meta.preprocess(x), feats,
        mini.meta.preprocess(crop), tuple(jnp.int32(a) for a in at))
    want_logits, want = mini(x.at[:, at[0]:at[0] + window[0], at[1]:at[1] + window[1]].set(crop))
    np.testing.assert_allclose(got_logits, want_logits, rtol=1e-5, atol=1e-5)
    assert set(got) == set(want)
    for name in mini.layers:
        np.testing.assert_allclose(got[name], want[name], rtol=1e-5, atol=1e-5, err_msg=name)


@pytest.mark.parametrize("model, size, window, stride, baseline, target", [
    ("mini", 64, (7, 5), (3, 4), 0.3, 1),
    ("mini", 64, (64, 64), (1, 1), 0.5, 2),
    ("mini", 64, (12, 12), (6, 6), "image", ji.targets.unit("conv2_1", 3)),
    ("small_vgg", 50, (8, 8), (6, 6), 0.2, ji.targets.unit("fc7", 1)),
])
@pytest.mark.slow
def test_incremental_occlusion_equals_full(request, model, size, window, stride, baseline, target):
    m = request.getfixturevalue(model)
    x = jax.random.uniform(jax.random.key(6), (2, size, size, 3))
    if baseline == "image":  # a per-pixel baseline: a blurred copy
        baseline = jax.random.uniform(jax.random.key(7), (1, size, size, 3))
    kw = dict(window=window, stride=stride, baseline=baseline)
    full = ji.occlusion(m, x, target, incremental=False, **kw)
    fast = ji.occlusion(m, x, target, batch_size=5, **kw)  # chunked: the lax.map path
    assert float(jnp.abs(full).max()) > 0
    np.testing.assert_allclose(fast, full, rtol=1e-4, atol=1e-6 * float(jnp.abs(full).max()) + 1e-7)
