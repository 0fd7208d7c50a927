"""Ground truth on `shapes` and the model-randomization sanity check, on the shipped vgg-mini."""

import jax
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


@pytest.fixture(scope="module")
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


@pytest.mark.parametrize("method", [ji.saliency, ji.grad_cam])
def test_randomizing_the_top_layers_destroys_the_map(default_model, held_out, method):
    x, y, _ = held_out
    x, y = x[:16], y[:16]
    base = ev.heatmap(method(default_model, x, y))
    top2 = ev.cascading_randomization(default_model, jax.random.key(5), depth=2)
    rho = ev.spearman(base, ev.heatmap(method(top2, x, y)))
    assert rho.mean() < 0.5


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
