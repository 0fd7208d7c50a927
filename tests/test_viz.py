"""Pictures from attributions: numerical properties, and the `attribute` command end to end."""

import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from jaxinterp import viz
from jaxinterp.images import load_image, save_image

rng = np.random.default_rng(0)
ATTR = rng.normal(size=(2, 8, 8, 3)).astype(np.float32)
IMAGE = rng.random((8, 8, 3), dtype=np.float32)


def test_positive_and_negative_reconstruct_the_signed_map():
    pos, neg = viz.split_sign(ATTR)
    np.testing.assert_array_equal(pos - neg, ATTR)
    assert pos.min() >= 0 and neg.min() >= 0
    p, n = viz.positive(ATTR), viz.negative(ATTR)
    scale_p = np.maximum(ATTR, 0).reshape(2, -1).max(1)[:, None, None, None]
    scale_n = np.maximum(-ATTR, 0).reshape(2, -1).max(1)[:, None, None, None]
    np.testing.assert_allclose(p * scale_p - n * scale_n, ATTR, atol=1e-6)
    assert p.max() == 1 and n.max() == 1


def test_colored_is_per_image_min_max():
    c = viz.colored(ATTR)
    for i in range(2):
        assert c[i].min() == 0 and c[i].max() == 1
    np.testing.assert_allclose(c[1], (ATTR[1] - ATTR[1].min()) / np.ptp(ATTR[1]), rtol=1e-6)
    assert viz.colored(ATTR[0]).shape == (8, 8, 3)


def test_gray_heatmap_clips_at_percentile():
    h = viz.gray_heatmap(ATTR, percentile=90)
    m = np.abs(ATTR).max(-1)
    top = np.percentile(m[0], 90)
    np.testing.assert_allclose(h[0], np.clip(m[0] / top, 0, 1), rtol=1e-6)
    assert np.isclose((h[0] == 1).mean(), 0.1, atol=0.03)


def test_overlay_alpha_zero_is_the_image_and_one_is_the_colormap():
    heat = viz.gray_heatmap(ATTR[0])
    np.testing.assert_array_equal(viz.overlay(IMAGE, heat, alpha=0.0), IMAGE)
    np.testing.assert_allclose(viz.overlay(IMAGE, heat, alpha=1.0), viz.colormap(heat))
    with pytest.raises(ValueError, match="alpha"):
        viz.overlay(IMAGE, heat, alpha=2)


def test_captum_style_visualize():
    a = np.zeros((8, 8, 3), np.float32)
    a[0, 0] = [1, 1, 1]  # positive evidence at one pixel
    a[7, 7] = [-1, -1, -1]
    pos = viz.visualize(a, IMAGE, method="masked_image", sign="positive", outlier_perc=0)
    assert np.all(pos[0, 0] == IMAGE[0, 0]) and np.all(pos[7, 7] == 0)
    neg = viz.visualize(a, IMAGE, method="alpha_scaling", sign="negative", outlier_perc=0)
    np.testing.assert_allclose(neg[7, 7], IMAGE[7, 7]) and np.testing.assert_array_equal(neg[0, 0], 0)
    allv = viz.visualize(a, method="heat_map", sign="all", outlier_perc=0)
    np.testing.assert_allclose(allv[3, 3], viz.colormap(0.5, "bwr"), atol=1e-6)  # zero -> center
    with pytest.raises(ValueError, match="sign must be"):
        viz.visualize(a, sign="both")
    with pytest.raises(ValueError, match="needs the image"):
        viz.visualize(a, method="blended_heat_map")


def test_grid_layout():
    g = viz.grid(np.ones((5, 4, 4, 3)), ncols=3, pad=1, fill=0)
    assert g.shape == (2 * 5 + 1, 3 * 5 + 1, 3)
    assert g[1:5, 1:5].min() == 1 and g[0].max() == 0


def test_load_image_modes(tmp_path):
    Image.new("L", (10, 6), 128).save(tmp_path / "g.png")
    Image.new("RGBA", (4, 4), (255, 0, 0, 0)).save(tmp_path / "a.png")  # fully transparent
    Image.new("RGB", (20, 10), (0, 0, 255)).convert("P").save(tmp_path / "p.png")
    g = load_image(tmp_path / "g.png")
    assert g.shape == (6, 10, 3) and np.allclose(g, 128 / 255)
    np.testing.assert_allclose(load_image(tmp_path / "a.png"), 1.0)  # composited on white
    p = load_image(tmp_path / "p.png", size=(8, 8), fit="crop")
    assert p.shape == (8, 8, 3) and np.allclose(p[..., 2], 1.0, atol=0.02)
    with pytest.raises(ValueError, match="cannot read"):
        (tmp_path / "bad.png").write_text("no")
        load_image(tmp_path / "bad.png")


def run(*args):
    return subprocess.run([sys.executable, "-m", "jaxinterp.cli", *args], capture_output=True,
                          text=True)


def test_attribute_command_end_to_end(tmp_path):
    import jax

    import jaxinterp as ji

    b = ji.data.shapes(jax.random.key(31), 2)
    for i in range(2):
        save_image(np.asarray(b.images[i]), tmp_path / f"img{i}.png")
    (tmp_path / "broken.png").write_text("not an image")
    out = tmp_path / "out"
    r = run("attribute", str(tmp_path / "img0.png"), str(tmp_path / "broken.png"),
            str(tmp_path / "img1.png"), "--method", "saliency,grad_cam,cam", "--out", str(out),
            "--target", "auto")
    assert r.returncode == 1 and "broken.png" in r.stderr and "1 of 3 images failed" in r.stderr
    for stem in ("img0", "img1"):
        for method in ("saliency", "grad_cam", "cam"):
            for pic in ("colored", "negative", "positive", "heatmap", "overlay"):
                with Image.open(out / stem / f"{method}_{pic}.png") as im:
                    assert im.size == (64, 64) and im.mode == "RGB"
        with Image.open(out / stem / "table.png") as im:  # 3 method rows x 6 columns, wide
            assert im.size[0] > 1.5 * im.size[1]
    with Image.open(out / "compare.png") as im:  # 2 image rows x 4 columns
        assert im.size[0] > 1.5 * im.size[1]
    before = (out / "img0" / "table.png").read_bytes()
    r = run("attribute", str(tmp_path / "img0.png"), "--out", str(out))
    assert r.returncode == 2 and "--force" in r.stderr
    assert (out / "img0" / "table.png").read_bytes() == before


def test_attribute_bad_method_and_target(tmp_path):
    r = run("attribute", "--method", "saliency,magic", "--out", str(tmp_path / "o"))
    assert r.returncode == 2 and "unknown --method magic" in r.stderr
    r = run("attribute", "--target", "dodecahedron", "--out", str(tmp_path / "o"), "--samples", "1",
            "--method", "saliency")
    assert r.returncode == 2 and "class name" in r.stderr


def test_filters_and_activations_commands(tmp_path):
    r = run("filters", "--layer", "conv1_1", "--out", str(tmp_path / "f.png"), "--zoom", "4")
    assert r.returncode == 0, r.stderr
    with Image.open(tmp_path / "f.png") as im:  # 16 RGB filters of 3x3 taps at zoom 4: 4 x 4 grid
        assert im.size == (4 * 13 + 1, 4 * 13 + 1)
    r = run("filters", "--layer", "relu1_1", "--out", str(tmp_path / "g.png"))
    assert r.returncode == 2 and "need a conv layer" in r.stderr
    r = run("activations", "--layer", "conv2_1", "--out", str(tmp_path / "a.png"))
    assert r.returncode == 0, r.stderr
    with Image.open(tmp_path / "a.png") as im:  # 32 maps of 32x32 in a 6-column grid
        assert im.size == (6 * 33 + 1, 6 * 33 + 1)
    r = run("activations", "--layer", "conv2_1", "--out", str(tmp_path / "a.png"))
    assert r.returncode == 2 and "--force" in r.stderr
