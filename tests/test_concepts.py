"""Concepts on the shipped vgg-mini: dissection, top-activating patches, neighbours, maps, TCAV."""

import importlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image
from scipy import stats

import jaxinterp as ji
import netdissect_lite

TEST_SEED = 1_000_003  # held out from training


@pytest.fixture(scope="session")
def unseen():
    return ji.data.shapes(jax.random.key(TEST_SEED), 1024, start=50_000)


@pytest.fixture(scope="session")
def dissected(default_model, unseen):
    """200 unseen images dissected at a first and a late layer, in 4 batches (the last short)."""
    d = jax.tree_util.tree_map(lambda a: a[:200], unseen)
    return d, ji.dissect(default_model, ["relu1_1", "relu4_2"], d, batch_size=64)


def test_dissection_finds_colour_first_and_shapes_last(dissected):
    rows = {row["layer"]: row for row in ji.concepts.summary(dissected[1])}
    first, last = rows["relu1_1"], rows["relu4_2"]
    assert first["color"] > first["shape"] + first["texture"], first
    assert last["shape"] > last["color"] + last["texture"], last
    assert last["shape"] >= 0.5 * last["units"], last


def lite_ious(m, d, layers, batch_size, thresholds, resize="ours"):
    """NetDissect-Lite's IoU `{layer: [units, concepts]}` on `d` (tests/netdissect_lite.py).

    Shared with `ji.dissect`: the model's activations, the thresholds given, and with
    `resize="ours"` the library's `upsample` run on the same batches. Transcribed from Lite:
    the tally and the IoU. `resize="pil"`: PIL's bilinear resize (Lite's `imresize(mode='F')`)."""
    from jaxinterp.concepts.dissection import upsample

    pixels, labelcat = netdissect_lite.label_maps(d)
    size = pixels.shape[2:]
    resized = jax.jit(upsample, static_argnums=1)
    feats = m(d.images)[1]
    acts = {layer: np.asarray(feats[layer]) for layer in layers}
    ups = {layer: [np.asarray(resized(feats[layer][s:s + batch_size], size))
                   for s in range(0, len(d.images), batch_size)] if resize == "ours" else None
           for layer in layers}
    out = {}
    for layer in layers:
        features = acts[layer].transpose(0, 3, 1, 2)  # Lite's [N, units, h, w]
        if resize == "ours":
            up = np.concatenate(ups[layer])
            imresize = lambda f, shape, i, u: up[i, ..., u]  # noqa: E731
        else:
            imresize = lambda f, shape, i, u: np.asarray(  # noqa: E731
                Image.fromarray(f.astype(np.float32), mode="F").resize(shape[::-1],
                                                                        Image.BILINEAR))
        iou = netdissect_lite.tally(features, thresholds[layer], pixels, labelcat, imresize)
        out[layer] = iou[:, 1:]  # Lite's label 0 is the background
    return out


def test_threshold_and_iou_equal_netdissect_lite(default_model, dissected):
    m, (d, r) = default_model, dissected
    layers = tuple(r)
    t, feats = {}, m(d.images)[1]
    for layer in layers:
        acts = np.asarray(feats[layer])
        t[layer] = np.quantile(acts.reshape(-1, acts.shape[-1]), 1 - 0.005, axis=0)
        np.testing.assert_allclose(r[layer].threshold, t[layer], rtol=1e-5)
    ious = lite_ious(m, d, layers, 64, {layer: r[layer].threshold for layer in layers})
    for layer in layers:
        np.testing.assert_allclose(r[layer].ious, ious[layer], rtol=0, atol=1e-6)
        np.testing.assert_array_equal(r[layer].concept, ious[layer].argmax(1))
    # the peer end to end: PIL's resize and np.quantile's thresholds (relu1_1 is not resized)
    pil = lite_ious(m, d, ["relu4_2"], 200, t, resize="pil")["relu4_2"]
    np.testing.assert_allclose(r["relu4_2"].ious, pil, atol=2e-3)  # jax.image vs PIL


@pytest.mark.parametrize("h,size", [(8, 64), (16, 48), (5, 15), (6, 64), (12, 12)])
def test_sparse_tallies_equal_the_dense_upsampling(h, size):
    """The live-cell gather equals upsampling every map, at even, odd, unit and non-integer
    scales, with several concepts in one image's label group and images without labels; and
    both equal the masks of `upsample`'s maps (the peer's bincounts). Separate programs may
    round a pixel differently by an ulp (fused multiply-adds): counts may differ only by the
    pixels within 1e-5 of the threshold (none, in practice)."""
    from jaxinterp.concepts.dissection import _cells, _overlap, _slots, upsample

    rng = np.random.default_rng(0)
    n, units = 5, 7
    a = jnp.asarray(rng.standard_normal((n, h, h, units)), jnp.float32) ** 2
    t = jnp.asarray(np.quantile(np.asarray(a).reshape(-1, units), 0.9, axis=0), jnp.float32)
    groups = np.stack([rng.integers(-1, 8, (n, size, size)),        # 8 shapes, many per image
                       np.where(rng.random((n, size, size)) < 0.5, 9, -1),  # one colour
                       np.full((n, size, size), -1)], 1).astype(np.int32)   # no texture
    groups[0] = -1  # an unlabelled image
    slots, slot_groups, counts = _slots(groups)
    assert slot_groups.count(0) == 8 and slot_groups.count(2) == 0
    assert (slots[0] == -1).all() and counts[0].sum() == 0
    dense, sparse = (jax.jit(lambda a, t, mode=mode: _overlap(
        a, jnp.asarray(groups), jnp.asarray(slots), slot_groups, t, mode=mode))(a, t)
        for mode in ("dense", "sparse"))
    up = np.asarray(jax.jit(upsample, static_argnums=1)(a, (size, size)))
    near = np.abs(up - np.asarray(t)) <= 1e-5 * (1 + np.abs(np.asarray(t)))  # [n, H, W, u]
    slack = near.sum((1, 2))
    assert slack.sum() <= 2, slack.sum()  # the data keep clear of the threshold
    for d, s_ in zip(dense, sparse):
        assert (np.abs(np.asarray(d) - np.asarray(s_)).reshape(n, units, -1)
                <= slack[..., None]).all()
    mask = up > np.asarray(t)
    assert (np.abs(dense[0] - mask.sum((1, 2))) <= slack).all()
    for j, (g, c) in enumerate(zip(slot_groups, slots.T)):
        on = (groups[:, g] == c[:, None, None]) & (c >= 0)[:, None, None]
        assert (np.abs(dense[1][:, :, j] - (mask & on[..., None]).sum((1, 2))) <= slack).all()
    integer = size % h == 0
    assert (_cells(h, size)[2] is not None) == integer
    # upsample is bilinear with half-pixel centres and clamped edges (PIL's reading)
    ref = np.asarray(jax.image.resize(a, (n, size, size, units), "bilinear"))
    np.testing.assert_allclose(up, ref, rtol=0, atol=1e-5)


def test_tallies_with_activations_tied_to_the_threshold():
    """A map equal to its threshold except one sample above it: interpolating four equal
    samples can round above them, but a pixel counts only where one of its samples passes —
    dense and sparse agree exactly (at scale 3 the rounding is seen on this CPU)."""
    from jaxinterp.concepts.dissection import _overlap

    units = 16
    t = jnp.asarray(np.random.default_rng(2).uniform(0.1, 10.0, units), jnp.float32)
    a = jnp.broadcast_to(t, (2, 5, 5, units)).at[:, 2, 2].add(1.0)
    groups = jnp.zeros((2, 3, 15, 15), jnp.int32).at[:, 1:].set(-1)
    slots = jnp.asarray([[0, -1, -1], [0, -1, -1]], jnp.int32)
    dense, sparse = (jax.jit(lambda a, mode=mode: _overlap(a, groups, slots, (0, 1, 2), t,
                                                           mode=mode))(a)
                     for mode in ("dense", "sparse"))
    for d, s_ in zip(dense, sparse):
        np.testing.assert_array_equal(d, s_)
    assert 0 < np.asarray(dense[0]).max() <= 4 * 9  # only the four cells around the peak


def test_running_top_is_exact_whatever_the_order():
    """The buffered top-k equals np.partition of everything, for batches in rising order (every
    batch above the floor), falling order and with ties."""
    from jaxinterp.concepts.dissection import _RunningTop

    rng = np.random.default_rng(1)
    data = [rng.standard_normal((40, 3)).astype(np.float32) for _ in range(12)]
    data[3][:, 1] = data[3][0, 1]  # ties
    for order in (data, sorted(data, key=lambda b: b.mean()), sorted(data, key=lambda b: -b.mean())):
        top = _RunningTop(57, 3)
        for b in order:
            top.add(b.reshape(4, 10, 3))
        got = np.sort(top.values(), 0)
        want = np.sort(np.concatenate(order), 0)[-57:]
        np.testing.assert_array_equal(got, want)
    for first in (True, False):  # a NaN is refused in the first batch and in later ones alike
        top = _RunningTop(57, 3)
        if not first:
            top.add(data[0]), top.add(data[1])
        with pytest.raises(ValueError, match=r"NaN activations in units \[1\]"):
            top.add(np.where(np.arange(3) == 1, np.nan, data[2]))


def test_top_activating_ranks_images_and_patches_hold_the_receptive_field(default_model, unseen):
    m = default_model
    x = unseen.images[:200]
    r = ji.top_activating(m, "relu3_2", [3, 7], x, k=4, batch_size=64)
    acts = np.asarray(m(x)[1]["relu3_2"])[..., [3, 7]].max((1, 2))  # [200, 2]
    np.testing.assert_array_equal(r.indices, np.argsort(-acts, 0, kind="stable")[:4].T)
    np.testing.assert_allclose(r.values, np.sort(acts, 0)[::-1][:4].T, rtol=1e-6)
    np.testing.assert_array_equal(r.images[0, 0], np.asarray(x[r.indices[0, 0]]))
    # pixels outside the unit's receptive-field box cannot change its activation at that position
    for u, unit in enumerate((3, 7)):
        i, (py, px) = r.indices[u, 0], r.positions[u, 0]
        top, left, bottom, right = r.boxes[u, 0]
        assert bottom - top <= 30 and right - left <= 30
        img = np.asarray(x[i]).copy()
        noise = np.random.default_rng(0).random(img.shape).astype(np.float32)
        inside = np.zeros(img.shape[:2], bool)
        inside[top:bottom, left:right] = True
        img[~inside] = noise[~inside]
        a = np.asarray(m(img[None])[1]["relu3_2"])[0, py, px, unit]
        np.testing.assert_allclose(a, r.values[u, 0], rtol=1e-5)
        img2 = np.asarray(x[i]).copy()  # while the pixels inside it do change it
        img2[top:bottom, left:right] = noise[top:bottom, left:right]
        assert np.asarray(m(img2[None])[1]["relu3_2"])[0, py, px, unit] != r.values[u, 0]
    assert r.patches.shape == (2, 4, 30, 30, 3)


def test_neighbours_share_the_query_class(default_model, unseen):
    queries = ji.data.shapes(jax.random.key(TEST_SEED), 64, start=60_000)
    idx, dist = ji.nearest_neighbors(default_model, "gap", queries.images, unseen, k=5)
    labels = np.asarray(unseen.labels)
    share = (labels[idx] == np.asarray(queries.labels)[:, None]).mean()
    assert share >= 0.95, share
    assert (np.diff(dist, axis=1) >= 0).all()


@pytest.mark.parametrize("metric", ["l2", "cosine"])
def test_chunked_neighbours_equal_brute_force(default_model, unseen, metric):
    x = unseen.images[:150]
    q = unseen.images[150:160]
    idx, dist = ji.nearest_neighbors(default_model, "relu4_2", q, x, k=3, metric=metric,
                                     batch_size=40)
    f = ji.concepts.features(default_model, "relu4_2", x).astype(np.float64)
    g = ji.concepts.features(default_model, "relu4_2", q).astype(np.float64)
    if metric == "cosine":
        f /= np.linalg.norm(f, axis=1, keepdims=True)
        g /= np.linalg.norm(g, axis=1, keepdims=True)
        full = 1 - g @ f.T
    else:
        full = np.sqrt(((g[:, None] - f[None]) ** 2).sum(-1))
    np.testing.assert_array_equal(idx, np.argsort(full, 1)[:, :3])
    np.testing.assert_allclose(dist, np.sort(full, 1)[:, :3], rtol=1e-3, atol=1e-3)


def test_pca_map_equals_numpy_and_tsne_is_seeded(default_model, unseen):
    f = ji.concepts.features(default_model, "gap", unseen.images[:120])
    p = ji.embed_2d(f)
    x = f - f.mean(0)
    _, _, vt = np.linalg.svd(x, full_matrices=False)
    ref = x @ vt[:2].T
    np.testing.assert_allclose(np.abs(p), np.abs(ref), rtol=1e-3, atol=1e-3)
    pytest.importorskip("sklearn")
    a = ji.embed_2d(f, method="tsne", key=1)
    np.testing.assert_array_equal(a, ji.embed_2d(f, method="tsne", key=1))
    assert a.shape == (120, 2)
    # the map keeps classes apart: a point's nearest neighbour in 2-D is usually of its class
    labels = np.asarray(unseen.labels[:120])
    d2 = ((a[:, None] - a[None]) ** 2).sum(-1) + np.eye(120) * 1e9
    assert (labels[d2.argmin(1)] == labels).mean() > 0.9


@pytest.mark.slow
def test_tcav_shape_concept_is_significant_colour_and_random_are_not(default_model):
    d = ji.data.shapes(jax.random.key(TEST_SEED), 1300, start=70_000)
    x, lab, col = d.images, np.asarray(d.labels), np.asarray(d.colors)
    pool = x[800:1100]
    star = x[:800][lab[:800] == 3][:30]
    red = x[:800][col[:800] == 0][:30]
    # a random concept with every class equally represented: a random set that happens to
    # over-represent a class (x[1100:1130] holds 7 of class 5 in 30) is a weak concept of that
    # class, and its p-value for it sits near alpha (0.008-0.011 across CPUs)
    random_concept = x[np.concatenate([np.flatnonzero(lab[1100:] == c)[:4] + 1100
                                       for c in range(8)])]
    tests = 3 * 2  # Bonferroni over the concept x class pairs one would test here
    alpha = 0.05 / tests
    m = default_model
    # "greater": does the class's score rise along the concept (the sign of the derivative)
    for concept, cls, alternative, expect in [(star, 3, "greater", True),
                                              (red, 3, "greater", False),
                                              (random_concept, 5, "two-sided", False)]:
        r = ji.tcav(m, "relu3_2", concept, pool, x[:800][lab[:800] == cls][:40], cls, runs=10,
                    alpha=alpha, alternative=alternative, key=0)
        assert r.significant == expect, (cls, r)
        assert r.p_value == pytest.approx(stats.ttest_ind(r.scores, r.random_scores,
                                                          alternative=alternative).pvalue)
        if concept is star:
            assert r.score >= 0.9, r  # the class's own shape raises its score
    # late layer: the class's own shape; the same key gives the same result, and the same
    # module and weights wrapped with ji.wrap (gradient through a tap, not `resume`) give the
    # same numbers
    stars = x[:800][lab[:800] == 3][:40]
    r1 = ji.tcav(m, "relu4_2", star, pool, stars, 3, runs=4, key=5)
    assert r1.score >= 0.9, r1
    r2 = ji.tcav(m, "relu4_2", star, pool, stars, 3, runs=4, key=5)
    np.testing.assert_array_equal(r1.scores, r2.scores)  # seeded: same key, same result
    w = ji.wrap(m.module.apply, m.variables, input_size=m.input_size, preprocess=m.preprocess,
                classes=m.classes)
    assert not hasattr(w, "resume")
    r3 = ji.tcav(w, m.resolve("relu4_2"), star, pool, stars, 3, runs=4, key=5)
    for a, b in zip(r1, r3):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=0)


def test_tcav_p_value_alternatives():
    p_value = importlib.import_module("jaxinterp.concepts.tcav").p_value
    ups, rand = np.ones(5), np.array([0.2, 0.4, 0.6, 0.8, 0.5])
    greater, less, both = (p_value(ups, rand, a) for a in ("greater", "less", "two-sided"))
    pooled = (4 * ups.var(ddof=1) + 4 * rand.var(ddof=1)) / 8  # Student's pooled variance
    t = (1 - rand.mean()) / np.sqrt(pooled * (1 / 5 + 1 / 5))
    assert greater == pytest.approx(stats.t.sf(t, 8), rel=1e-9)
    assert less == pytest.approx(1 - greater, rel=1e-9)
    assert both == pytest.approx(2 * greater, rel=1e-9)
    assert p_value(1 - ups, rand, "greater") == pytest.approx(less, rel=1e-9)  # mirrored
    assert p_value(np.full(4, 0.5), np.full(4, 0.5)) == 1.0
    with pytest.raises(ValueError, match="alternative must be one of"):
        p_value(ups, rand, "bigger")


def test_concept_errors(default_model, unseen):
    m = default_model
    with pytest.raises(ValueError, match="pixel concept labels"):
        ji.dissect(m, "relu1_1", unseen.images[:8])
    with pytest.raises(ValueError, match="no spatial maps"):
        ji.dissect(m, "fc", unseen)
    with pytest.raises(ValueError, match="unknown layer"):
        ji.dissect(m, "conv9_9", unseen)
    with pytest.raises(ValueError, match="k=20 is larger than the data"):
        ji.top_activating(m, "relu2_2", 0, unseen.images[:10], k=20)
    with pytest.raises(ValueError, match="out of range"):
        ji.top_activating(m, "relu2_2", 99, unseen.images[:10])
    with pytest.raises(ValueError, match="k=20 is larger"):
        ji.nearest_neighbors(m, "gap", unseen.images[:2], unseen.images[:10], k=20)
    with pytest.raises(ValueError, match="metric"):
        ji.nearest_neighbors(m, "gap", unseen.images[:2], unseen.images[:10], metric="l1")
    with pytest.raises(ValueError, match="concept_images needs at least 2"):
        ji.tcav(m, "relu4_2", unseen.images[:1], unseen.images[:10], unseen.images[:5], 0)
    with pytest.raises(ValueError, match="alternative must be one of two-sided, greater, less"):
        ji.tcav(m, "relu4_2", unseen.images[:5], unseen.images[:10], unseen.images[:5], 0,
                alternative="larger")
    with pytest.raises(ValueError, match="random_images has 3"):
        ji.tcav(m, "relu4_2", unseen.images[:5], unseen.images[:3], unseen.images[:5], 0)
    with pytest.raises(TypeError, match="read only once"):
        ji.dissect(m, "relu1_1", (b for b in [unseen]))
    with pytest.raises(ValueError, match="method must be"):
        ji.embed_2d(np.zeros((5, 3)), method="mds")
