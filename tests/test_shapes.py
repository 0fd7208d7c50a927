"""The `shapes` data set and the shipped vgg-mini trained on it."""

import json
import subprocess
import sys

import jax
import numpy as np
import pytest

import jaxinterp as ji
from jaxinterp.data import shapes_dataset

TEST_SEED = 1_000_003  # the held-out seed of scripts/train_default.py


@pytest.fixture(scope="session")
def batch():
    return ji.data.shapes(jax.random.key(7), 4000)


def test_same_key_same_bits_other_key_other_images():
    a = ji.data.shapes(jax.random.key(5), 6)
    b = ji.data.shapes(jax.random.key(5), 6)
    c = ji.data.shapes(jax.random.key(6), 6)
    for u, v in zip(a, b):
        assert np.array_equal(np.asarray(u), np.asarray(v))
    assert not np.any([np.array_equal(a.images[i], c.images[i]) for i in range(6)])
    assert len({np.asarray(im).tobytes() for im in a.images}) == 6


def test_image_i_does_not_depend_on_the_batch_split():
    whole = ji.data.shapes(jax.random.key(5), 8)
    part = ji.data.shapes(jax.random.key(5), 3, start=5)
    for u, v in zip(whole, part):
        assert np.array_equal(np.asarray(u)[5:], np.asarray(v))


def test_labels_and_pixel_maps_are_consistent(batch):
    imgs = np.asarray(batch.images)
    assert imgs.dtype == np.float32 and imgs.shape == (4000, 64, 64, 3)
    assert imgs.min() >= 0 and imgs.max() <= 1
    mask = np.asarray(batch.mask)
    area = mask.mean((1, 2))
    assert area.min() > 0.02 and area.max() < 0.6  # an object is always there and fits
    cm, tm = np.asarray(batch.color_map), np.asarray(batch.texture_map)
    assert np.array_equal(cm >= 0, mask) and np.array_equal(tm >= 0, mask)
    assert np.all(cm == np.where(mask, np.asarray(batch.colors)[:, None, None], -1))
    assert np.all(tm == np.where(mask, np.asarray(batch.textures)[:, None, None], -1))
    # the object's pixels carry its colour: mean object colour is nearest its palette colour
    obj = (imgs * mask[..., None]).sum((1, 2)) / mask.sum((1, 2))[:, None]
    solid = np.asarray(batch.textures) == ji.data.TEXTURES.index("solid")
    d = ((obj[solid, None, :] - shapes_dataset.COLOR_RGB[None]) ** 2).sum(-1)
    assert (d.argmin(1) == np.asarray(batch.colors)[solid]).mean() > 0.99
    for values, n in ((batch.labels, 8), (batch.colors, 8), (batch.textures, 4)):
        counts = np.bincount(np.asarray(values), minlength=n)
        assert counts.min() > 0.7 * len(values) / n  # every value occurs, roughly uniformly


def _holdout_accuracy(features, labels):
    """Accuracy on the second half of the best lookup classifier fitted on the first half."""
    half = len(labels) // 2
    table = {}
    for f, y in zip(features[:half], labels[:half]):
        table.setdefault(f, np.zeros(8))[y] += 1
    pred = [table[f].argmax() if f in table else 0 for f in features[half:]]
    return np.mean(np.array(pred) == labels[half:])


def test_colour_and_texture_carry_no_class_information(batch):
    y = np.asarray(batch.labels)
    pairs = list(zip(np.asarray(batch.colors).tolist(), np.asarray(batch.textures).tolist()))
    sigma = np.sqrt(0.125 * 0.875 / (len(y) // 2))
    # the best classifier from (colour, texture) is at chance, 1/8
    assert abs(_holdout_accuracy(pairs, y) - 0.125) < 4 * sigma
    # and so is one from the measured mean colour of the object (quantized)
    mask = np.asarray(batch.mask)
    obj = (np.asarray(batch.images) * mask[..., None]).sum((1, 2)) / mask.sum((1, 2))[:, None]
    q = [tuple(v) for v in np.floor(obj * 4).astype(int).tolist()]
    assert abs(_holdout_accuracy(q, y) - 0.125) < 4 * sigma + 0.01
    # while a sanity check: the same classifier on the object's area does know something
    area = np.digitize(mask.mean((1, 2)), np.quantile(mask.mean((1, 2)), np.linspace(0, 1, 9)))
    assert _holdout_accuracy(list(area), y) > 0.2


def test_bad_arguments():
    with pytest.raises(ValueError, match="n must be a positive"):
        ji.data.shapes(jax.random.key(0), 0)
    with pytest.raises(ValueError, match="size must be"):
        ji.data.shapes(jax.random.key(0), 2, size=8)


def test_default_model_metadata(default_model):
    meta = default_model.metadata
    assert meta["arch"] == "vgg-mini" and meta["classes"] == list(ji.data.CLASSES)
    assert meta["input_size"] == [64, 64]
    test = meta["extra"]["test"]
    assert test["seed"] == TEST_SEED and test["images"] >= 2000
    assert test["accuracy"] >= 0.97
    assert min(test["per_class_accuracy"].values()) >= 0.90
    assert meta["extra"]["dataset"]["version"] == shapes_dataset.VERSION
    assert meta["extra"]["dataset"]["train_seed"] != TEST_SEED


def test_default_model_accuracy_on_held_out_split(default_model):
    b = ji.data.shapes(jax.random.key(TEST_SEED), 600, start=5000)  # beyond the recorded 2,000
    pred = np.asarray(jax.jit(lambda m, x: m(x)[0].argmax(-1))(default_model, b.images))
    y = np.asarray(b.labels)
    assert (pred == y).mean() >= 0.96
    for c in range(8):
        assert (pred[y == c] == c).mean() >= 0.85, ji.data.CLASSES[c]


def test_default_loads_fast_and_offline():
    code = """
import socket, time, json
def no_network(*a, **k):
    raise OSError("network access attempted")
socket.socket.connect = no_network
socket.create_connection = no_network
import jaxinterp as ji
t = time.perf_counter()
m = ji.load_model()
assert ji.load_model("vgg-mini").meta == m.meta
print(json.dumps({"seconds": time.perf_counter() - t, "classes": m.classes}))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    res = json.loads(out.stdout.strip().splitlines()[-1])
    assert res["classes"] == list(ji.data.CLASSES)
    assert res["seconds"] < 5.0
