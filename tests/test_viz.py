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


def test_visualize_errors():
    a = ATTR[0]
    with pytest.raises(ValueError, match="sign must be"):
        viz.visualize(a, sign="both")
    with pytest.raises(ValueError, match="needs the image"):
        viz.visualize(a, method="blended_heat_map")
    with pytest.raises(ValueError, match="needs one sign"):
        viz.visualize(a, IMAGE, method="masked_image", sign="all")


def _captum_picture(attr, image, method, sign, outlier_perc):
    """What Captum's visualize_image_attr draws, as RGB: its images composited like the axes."""
    from captum.attr import visualization as cv

    fig, ax = cv.visualize_image_attr(attr, image, method=method, sign=sign,
                                      outlier_perc=outlier_perc, use_pyplot=False,
                                      show_colorbar=False)
    ims = ax.get_images()
    if method == "heat_map":
        return ims[0].to_rgba(ims[0].get_array())[..., :3]
    if method == "blended_heat_map":
        gray, heat = (im.to_rgba(im.get_array())[..., :3] for im in ims)
        return (1 - ims[1].get_alpha()) * gray + ims[1].get_alpha() * heat
    data = np.asarray(ims[0].get_array(), np.float64)
    if method == "masked_image":
        return data / 255.0
    rgb, a = data[..., :3] / 255.0, data[..., 3:] / 255.0  # alpha_scaling: RGBA over a white axes
    return rgb * a + (1 - a)


@pytest.mark.parametrize("method, sign", [
    ("heat_map", "all"), ("heat_map", "positive"), ("heat_map", "negative"),
    ("heat_map", "absolute_value"), ("blended_heat_map", "all"),
    ("blended_heat_map", "absolute_value"), ("masked_image", "positive"),
    ("masked_image", "absolute_value"), ("alpha_scaling", "negative"),
    ("alpha_scaling", "absolute_value")])
def test_visualize_matches_captums_visualize_image_attr(method, sign):
    pytest.importorskip("captum")
    rng = np.random.default_rng(1)
    attr = rng.normal(size=(12, 10, 3)) * np.linspace(0.1, 3, 10)[None, :, None]
    image = rng.random((12, 10, 3))
    ours = viz.visualize(attr, image, method=method, sign=sign, outlier_perc=5)
    if method == "masked_image":  # Captum truncates 0-255 images to ints: feed it those
        theirs = _captum_picture(attr, image * 255, method, sign, 5)
        np.testing.assert_allclose(ours, theirs, atol=1 / 255 + 1e-6)
    elif method == "alpha_scaling":  # Captum needs 0-255 int images here (its alpha is an
        theirs = _captum_picture(attr, (image * 255).astype(int), method, sign, 5)  # int too)
        np.testing.assert_allclose(ours, theirs, atol=2 / 255 + 1e-6)
    else:  # Captum turns [0, 1] images into 0-255 ints first: the gray under the blend
        tol = 2 / 255 if method == "blended_heat_map" else 1e-6  # differs by a level
        np.testing.assert_allclose(ours, _captum_picture(attr, image, method, sign, 5), atol=tol)
    from captum.attr._utils.visualization import _normalize_attr

    np.testing.assert_allclose(viz.normalize_attr(attr.sum(-1), sign, 5),
                               _normalize_attr(attr.sum(-1), sign, 5), rtol=1e-6, atol=1e-12)


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
    (tmp_path / "bad.png").write_text("no")
    with pytest.raises(ValueError, match="cannot read"):
        load_image(tmp_path / "bad.png")


def test_sixteen_bit_gray_is_scaled_by_its_bit_depth(tmp_path):
    ramp = np.linspace(0, 1, 64 * 48).reshape(48, 64)
    Image.fromarray((ramp * 65535).round().astype(np.uint16)).save(tmp_path / "g16.png")
    Image.fromarray((ramp * 255).round().astype(np.uint8)).save(tmp_path / "g8.png")
    with Image.open(tmp_path / "g16.png") as im:
        assert im.mode.startswith("I")  # really a 16-bit file
    a16, a8 = load_image(tmp_path / "g16.png"), load_image(tmp_path / "g8.png")
    assert a16.shape == (48, 64, 3)
    np.testing.assert_allclose(a16, a8, atol=1 / 255 + 1e-6)


def test_exif_orientation_is_applied(tmp_path):
    img = np.zeros((20, 40, 3), np.uint8)
    img[:, :10] = 255  # a wide image, white on the left
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    Image.fromarray(img).save(tmp_path / "r.jpg", exif=exif, quality=95)
    a = load_image(tmp_path / "r.jpg")
    assert a.shape == (40, 20, 3)  # upright: tall
    assert a[:10].mean() > 0.9 and a[-10:].mean() < 0.1  # the white band is now on top


def test_animated_images_use_the_first_frame_with_a_warning(tmp_path):
    frames = [Image.new("RGB", (8, 8), c) for c in ((255, 0, 0), (0, 0, 255))]
    frames[0].save(tmp_path / "a.gif", save_all=True, append_images=frames[1:])
    with pytest.warns(UserWarning, match=r"\(2 frames\); using the first"):
        a = load_image(tmp_path / "a.gif")
    assert a[..., 0].mean() > 0.9 and a[..., 2].mean() < 0.1


def test_decompression_bomb_is_a_clear_error(tmp_path, monkeypatch):
    Image.new("L", (64, 64)).save(tmp_path / "big.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # 64*64 > 2x the limit: a "bomb"
    with pytest.raises(ValueError, match="refusing .*big.png"):
        load_image(tmp_path / "big.png")


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
    assert r.returncode == 2 and "unknown method magic" in r.stderr
    r = run("attribute", "--target", "dodecahedron", "--out", str(tmp_path / "o"), "--samples", "1",
            "--method", "saliency")
    assert r.returncode == 2 and "class name" in r.stderr


@pytest.mark.slow  # 18-25 s end to end; CI's slow step runs it
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
