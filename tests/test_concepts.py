"""Concepts on the shipped vgg-mini: dissection, top-activating patches, neighbours, maps, TCAV."""

import jax
import numpy as np
import pytest
from PIL import Image

import jaxinterp as ji
from jaxinterp.concepts import data as cdata

TEST_SEED = 1_000_003  # held out from training


@pytest.fixture(scope="module")
def unseen():
    return ji.data.shapes(jax.random.key(TEST_SEED), 1024, start=50_000)


def test_dissection_finds_colour_first_and_shapes_last(default_model, unseen):
    r = ji.dissect(default_model, ["relu1_1", "relu4_2"], unseen)
    rows = {row["layer"]: row for row in ji.concepts.summary(r)}
    first, last = rows["relu1_1"], rows["relu4_2"]
    assert first["color"] > first["shape"] + first["texture"], first
    assert last["shape"] > last["color"] + last["texture"], last
    assert last["shape"] >= 0.5 * last["units"], last


def numpy_netdissect(acts, labels, quantile):
    """NetDissect-Lite's formulas, directly in NumPy: a threshold per unit from all positions,
    maps upsampled bilinearly (PIL) to the label size, IoU accumulated over the data set."""
    n, h, w, u = acts.shape
    H, W, k = labels.shape[1:]
    thresholds = np.quantile(acts.reshape(-1, u), 1 - quantile, axis=0)
    ious = np.zeros((u, k))
    for unit in range(u):
        up = np.stack([np.asarray(Image.fromarray(a[..., unit].astype(np.float32), mode="F")
                                  .resize((W, H), Image.BILINEAR)) for a in acts])
        mask = up >= thresholds[unit]
        for c in range(k):
            lab = labels[..., c]
            inter = (mask & lab).sum()
            has = lab.reshape(n, -1).any(1)
            ious[unit, c] = inter / (mask[has].sum() + lab.sum() - inter + 1e-10)
    return thresholds, ious


@pytest.mark.parametrize("layer", ["relu2_2", "relu3_2"])
def test_threshold_and_iou_equal_netdissect_formulas(default_model, unseen, layer):
    d = jax.tree_util.tree_map(lambda a: a[:96], unseen)
    r = ji.dissect(default_model, layer, d, batch_size=40)[layer]  # 3 uneven batches
    acts = np.asarray(default_model(d.images)[1][layer])[..., :6]
    t, ious = numpy_netdissect(acts, np.asarray(cdata.concept_maps(d)), 0.005)
    np.testing.assert_allclose(r.threshold[:6], t, rtol=1e-5)
    np.testing.assert_allclose(r.ious[:6], ious, atol=2e-3)  # upsampling: jax.image vs PIL
    np.testing.assert_array_equal(r.concept[:6], ious.argmax(1))


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
    for concept, cls, expect in [(star, 3, True), (red, 3, False), (random_concept, 5, False)]:
        r = ji.tcav(m, "relu3_2", concept, pool, x[:800][lab[:800] == cls][:40], cls, runs=10,
                    alpha=alpha, key=0)
        assert r.significant == expect, (cls, r)
    r1 = ji.tcav(m, "relu4_2", star, pool, x[:40], 3, runs=4, key=5)
    r2 = ji.tcav(m, "relu4_2", star, pool, x[:40], 3, runs=4, key=5)
    np.testing.assert_array_equal(r1.scores, r2.scores)  # seeded: same key, same result


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
    with pytest.raises(ValueError, match="random_images has 3"):
        ji.tcav(m, "relu4_2", unseen.images[:5], unseen.images[:3], unseen.images[:5], 0)
    with pytest.raises(TypeError, match="read only once"):
        ji.dissect(m, "relu1_1", (b for b in [unseen]))
    with pytest.raises(ValueError, match="method must be"):
        ji.embed_2d(np.zeros((5, 3)), method="mds")
