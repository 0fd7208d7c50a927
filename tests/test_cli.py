"""The `jaxinterp` command line, end to end in subprocesses."""

import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

BLOCK_OPTIONAL = """
import sys
for name in ("torch", "safetensors", "h5py", "tqdm", "captum"):
    sys.modules[name] = None  # as in a core-only install
from jaxinterp.cli import main
sys.exit(main(sys.argv[1:]))
"""


def jaxinterp(*args, core_only=False, cwd=None):
    cmd = [sys.executable, "-c", BLOCK_OPTIONAL] if core_only else [sys.executable, "-m", "jaxinterp.cli"]
    return subprocess.run([*cmd, *args], capture_output=True, text=True, cwd=cwd)


def test_info_vgg16_with_core_install_only():
    r = jaxinterp("info", "vgg16", core_only=True)
    assert r.returncode == 0, r.stderr
    out = r.stdout
    assert "parameters 138,357,544" in out
    assert "features.28   conv5_3   14x14x512" in out
    assert "classifier.6  fc8       1000" in out
    assert "tench" in out and "mean (0.485, 0.456, 0.406)" in out


def test_info_default_model():
    r = jaxinterp("info")
    assert r.returncode == 0, r.stderr
    assert "vgg-mini" in r.stdout and "test accuracy" in r.stdout and "avgpool" in r.stdout


def test_weights_import_and_info_of_the_checkpoint(tmp_path):
    torch = pytest.importorskip("torch")
    pytest.importorskip("safetensors")
    from safetensors.torch import save_file
    from torch_vgg import TorchVGG

    save_file(TorchVGG("vgg-mini", num_classes=8, batch_norm=True).state_dict(),
              str(tmp_path / "m.safetensors"))
    out = tmp_path / "ck"
    r = jaxinterp("weights", "import", str(tmp_path / "m.safetensors"), "--arch", "vgg-mini",
                  "--out", str(out))
    assert r.returncode == 0, r.stderr
    assert (out / "metadata.json").exists()
    r = jaxinterp("weights", "import", str(tmp_path / "m.safetensors"), "--arch", "vgg-mini",
                  "--out", str(out))
    assert r.returncode == 2 and "--force" in r.stderr
    r = jaxinterp("info", str(out))
    assert r.returncode == 0 and "m.safetensors" not in r.stderr
    assert "classifier.0  fc        8" in r.stdout
    del torch


def test_import_bad_arch_is_a_clean_error(tmp_path):
    (tmp_path / "w.safetensors").write_bytes(b"junk")
    r = jaxinterp("weights", "import", str(tmp_path / "w.safetensors"), "--arch", "vgg99",
                  "--out", str(tmp_path / "o"))
    assert r.returncode == 2 and "unknown arch 'vgg99'" in r.stderr and "Traceback" not in r.stderr


def test_predict_reports_bad_images_and_goes_on(tmp_path):
    import jax

    import jaxinterp as ji

    b = ji.data.shapes(jax.random.key(11), 2)
    for i in range(2):
        Image.fromarray((np.asarray(b.images[i]) * 255).astype(np.uint8)).save(tmp_path / f"{i}.png")
    (tmp_path / "bad.png").write_text("not an image")
    r = jaxinterp("predict", str(tmp_path / "0.png"), str(tmp_path / "bad.png"),
                  str(tmp_path / "missing.png"), str(tmp_path / "1.png"), "--top", "2")
    assert r.returncode == 1
    assert "bad.png" in r.stderr and "missing.png" in r.stderr and "2 of 4 images failed" in r.stderr
    lines = [l for l in r.stdout.splitlines() if l.endswith("%")]
    assert len(lines) == 2
    for i, line in enumerate(lines):
        assert line.split(": ")[1].startswith(ji.data.CLASSES[int(b.labels[i])])


def test_predict_on_shapes_samples():
    r = jaxinterp("predict", "--samples", "4")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.strip().splitlines()
    assert len(lines) == 4 and all("%" in l for l in lines)


def test_visualize_classes_grid_and_channel_chunks(tmp_path):
    out = tmp_path / "classes.png"
    r = jaxinterp("visualize", "--channel", "circle,2,star", "--size", "32", "--steps", "4",
                  "--out", str(out))
    assert r.returncode == 0, r.stderr
    assert "circle: objective" in r.stdout and "triangle: objective" in r.stdout
    assert "3 visualizations (3 units x 1)" in r.stdout
    img = np.asarray(Image.open(out))
    assert img.shape == (2 + 2 * 34, 2 + 2 * 34, 3)  # 2x2 grid of 32 px tiles, pad 2
    r = jaxinterp("visualize", "--layer", "relu4_2", "--channel", "0-4", "--chunk", "2",
                  "--negative", "--batch", "2", "--size", "32", "--steps", "2", "--transforms",
                  "none", "--out", str(tmp_path / "ch.png"))
    assert r.returncode == 0, r.stderr
    assert "features.23:4: objective" in r.stdout and "(5 units x 2)" in r.stdout
    assert np.asarray(Image.open(tmp_path / "ch.png")).shape[:2] == (2 + 5 * 34, 2 + 2 * 34)


def test_visualize_errors_are_clean(tmp_path):
    for args, msg in [(["--layer", "relu4_2", "--channel", "128"], "has 128 channels"),
                      (["--layer", "relu4_2", "--objective", "prob"], "reads the logits"),
                      (["--channel", "hexagon"], "not a class index or name"),
                      (["--layer", "relu4_2", "--diversity", "1"], "needs --batch 2")]:
        r = jaxinterp("visualize", *args, "--steps", "1", "--out", str(tmp_path / "x.png"))
        assert r.returncode == 2 and msg in r.stderr and "Traceback" not in r.stderr, r.stderr
