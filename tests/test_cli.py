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
    assert r.returncode == 0, r.stderr
    assert "imported from m.safetensors (safetensors)" in r.stdout
    assert "classifier.0  fc        8" in r.stdout
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "keep.txt").write_text("x")
    r = jaxinterp("weights", "import", str(tmp_path / "m.safetensors"), "--arch", "vgg-mini",
                  "--out", str(tmp_path / "mine"), "--force")
    assert r.returncode == 2 and "not a jaxinterp checkpoint" in r.stderr
    assert (tmp_path / "mine" / "keep.txt").exists()
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


@pytest.mark.slow  # ~18 s; CI's slow step runs it
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


# ---------------------------------------------------------------- outputs, interrupts, limits


def _shapes_pngs(directory, n, seed=40):
    import jax

    import jaxinterp as ji

    directory.mkdir(parents=True, exist_ok=True)
    b = ji.data.shapes(jax.random.key(seed), n)
    paths = []
    for i in range(n):
        p = directory / f"s{i}.png"
        Image.fromarray((np.asarray(b.images[i]) * 255).astype(np.uint8)).save(p)
        paths.append(p)
    return paths


def test_attribute_names_are_unique_and_inside_out(tmp_path):
    a, b = _shapes_pngs(tmp_path / "a", 1)[0], _shapes_pngs(tmp_path / "b", 1, seed=41)[0]
    (tmp_path / "a" / "cat.png").write_bytes(a.read_bytes())
    (tmp_path / "b" / "cat.png").write_bytes(b.read_bytes())
    dots = tmp_path / "a" / "...png"  # stem ".." would climb out of --out
    dots.write_bytes(a.read_bytes())
    out = tmp_path / "deep" / "out"
    r = jaxinterp("attribute", str(tmp_path / "a" / "cat.png"), str(tmp_path / "b" / "cat.png"),
                  str(dots), "--method", "saliency", "--no-figures", "--out", str(out))
    assert r.returncode == 0, r.stderr
    entries = sorted(p.name for p in out.iterdir())
    assert entries == ["cat", "cat-2", "image", "run.json"], entries
    assert sorted(p.name for p in (tmp_path / "deep").iterdir()) == ["out"]  # nothing beside
    a0 = np.asarray(Image.open(out / "cat" / "original.png"))
    b0 = np.asarray(Image.open(out / "cat-2" / "original.png"))
    assert not np.array_equal(a0, b0)  # the second did not replace the first
    record = __import__("json").loads((out / "run.json").read_text())
    assert [i["output"] for i in record["images"]] == ["cat", "cat-2", "image"]


def test_out_is_checked_before_computing_and_foreign_dirs_are_never_replaced(tmp_path):
    (tmp_path / "file").write_text("x")
    r = jaxinterp("attribute", "--samples", "1", "--method", "saliency", "--out",
                  str(tmp_path / "file"))
    assert r.returncode == 2 and "is a file" in r.stderr
    project = tmp_path / "project"
    project.mkdir()
    (project / "notes.txt").write_text("mine")
    r = jaxinterp("attribute", "--samples", "1", "--method", "saliency", "--out", str(project),
                  "--force")
    assert r.returncode == 2 and "not a jaxinterp output" in r.stderr
    assert (project / "notes.txt").read_text() == "mine"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file", "project"]


def test_two_concurrent_runs_into_one_out_do_not_mix(tmp_path):
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "jaxinterp.cli", "attribute", "--method", "saliency",
           "--no-figures", "--out", str(out)]
    p1 = subprocess.Popen([*cmd, "--samples", "2", "--seed", "1"], stderr=subprocess.PIPE, text=True)
    p2 = subprocess.Popen([*cmd, "--samples", "3", "--seed", "2"], stderr=subprocess.PIPE, text=True)
    rc = sorted([p1.wait(), p2.wait()])
    errs = p1.stderr.read() + p2.stderr.read()
    assert rc == [0, 2], errs  # one wins whole, the other is refused
    assert "another run" in errs or "not empty" in errs
    record = __import__("json").loads((out / "run.json").read_text())
    names = sorted(p.name for p in out.iterdir() if p.is_dir())
    assert names == sorted(i["output"] for i in record["images"])  # only the winner's files
    assert len(names) in (2, 3)
    assert [p.name for p in tmp_path.iterdir()] == ["out"]  # no partial directory left


def test_sigint_stops_the_run_and_leaves_nothing_that_looks_complete(tmp_path):
    import signal
    import time

    out = tmp_path / "out"
    p = subprocess.Popen([sys.executable, "-m", "jaxinterp.cli", "attribute", "--samples", "64",
                          "--batch", "4", "--method", "saliency,integrated_gradients",
                          "--out", str(out)], stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while time.time() < deadline:  # wait until it has started writing its temporary output
        if any(".out.partial-" in q.name for q in tmp_path.iterdir()) and any(
                (q / "shapes0").exists() for q in tmp_path.iterdir()):
            break
        time.sleep(0.2)
    p.send_signal(signal.SIGINT)
    rc = p.wait(timeout=120)
    assert rc == 130, p.stderr.read()
    assert "interrupted" in p.stderr.read()
    assert list(tmp_path.iterdir()) == []  # neither the output nor a partial directory


def test_a_decompression_bomb_is_reported_and_the_others_are_written(tmp_path):
    good = _shapes_pngs(tmp_path, 2)
    import struct
    import zlib

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(
            ">I", zlib.crc32(kind + data))

    # a PNG header declaring 20000 x 20000 pixels (400 Mpx > twice Pillow's limit), a few bytes
    (tmp_path / "bomb.png").write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 20000, 20000, 8, 0, 0, 0, 0))
        + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b""))
    out = tmp_path / "out"
    r = jaxinterp("attribute", str(good[0]), str(tmp_path / "bomb.png"), str(good[1]),
                  "--method", "grad_cam", "--no-figures", "--out", str(out))
    assert r.returncode == 1 and "bomb.png" in r.stderr and "Traceback" not in r.stderr
    assert "1 of 3 images failed" in r.stderr
    assert (out / "s0" / "grad_cam_overlay.png").exists()
    assert (out / "s1" / "grad_cam_overlay.png").exists()


@pytest.mark.parametrize("args, msg", [
    (["predict", "--batch", "0"], "must be a positive integer"),
    (["predict", "--batch", "-1"], "must be a positive integer"),
    (["predict", "--top", "-1"], "must be a positive integer"),
    (["attribute", "--method", "", "--out", "o"], "no method given"),
    (["attribute", "--method", "saliency,magic", "--out", "o"], "unknown method magic"),
    (["visualize", "--channel", "5-2", "--out", "x.png"], "runs backwards"),
    (["visualize", "--directions", "0", "--out", "x.png"], "must be a positive integer"),
    (["filters", "--zoom", "0", "--out", "x.png"], "must be a positive integer"),
    (["visualize", "--lr", "nan", "--out", "x.png"], "must be a positive number"),
])
def test_numeric_options_are_validated_by_the_parser(cli, tmp_path, monkeypatch, args, msg):
    monkeypatch.chdir(tmp_path)  # in-process: the parser is all that runs
    code, _, err = cli(*args)
    assert code == 2 and msg in err and "Traceback" not in err, err
    assert len(err) < 2000 and list(tmp_path.iterdir()) == []


def test_huge_channel_range_fails_fast(tmp_path):
    r = jaxinterp("visualize", "--layer", "relu4_2", "--channel", "0-9999999", "--out",
                  str(tmp_path / "x.png"))
    assert r.returncode == 2 and "0-9999999 out of range" in r.stderr and len(r.stderr) < 500


def test_unexpected_failures_are_one_line_and_debug_shows_the_traceback(tmp_path):
    ck = tmp_path / "ck"
    ck.mkdir()
    (ck / "metadata.json").write_text('{"format": "jaxinterp-checkpoint", "arch": "vgg-mini"}')
    r = jaxinterp("predict", "--model", str(ck))
    assert r.returncode == 2 and "metadata lacks classes" in r.stderr
    assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1
    r = jaxinterp("--debug", "predict", "--model", str(ck))
    assert r.returncode == 2 and "Traceback" in r.stderr


MEMORY_BOUND_MB = 1000  # measured: 659 MB for 30 images, 727 MB for 300 (README)


@pytest.mark.slow
def test_attribute_on_300_images_stays_within_a_memory_bound(tmp_path):
    """300 images through the CLI in batches: peak RSS (the child's, via getrusage) stays under
    MEMORY_BOUND_MB, whatever the number of images (README: the CLI's memory bound)."""
    paths = _shapes_pngs(tmp_path / "in", 300)
    code = ("import resource, subprocess, sys\n"
            "r = subprocess.run(sys.argv[1:])\n"
            "print(r.returncode, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)")
    r = subprocess.run([sys.executable, "-c", code, sys.executable, "-m", "jaxinterp.cli",
                        "attribute", *map(str, paths), "--method", "saliency,occlusion",
                        "--no-figures", "--batch", "32", "--out", str(tmp_path / "out")],
                       capture_output=True, text=True)
    rc, peak_kb = map(int, r.stdout.split()[-2:])
    assert rc == 0, r.stderr[-2000:]
    assert len([p for p in (tmp_path / "out").iterdir() if p.is_dir()]) == 300
    assert peak_kb / 1024 < MEMORY_BOUND_MB, peak_kb / 1024


# --- dream, invert, attack --------------------------------------------------------------------

@pytest.mark.slow
def test_dream_writes_each_image_and_an_overview(tmp_path):
    out = tmp_path / "dreams"
    r = jaxinterp("dream", "--samples", "2", "--octaves", "2", "--steps", "3", "--out", str(out))
    assert r.returncode == 0, r.stderr
    assert "octave 1/2 46x46" in r.stdout and "octave 2/2 64x64" in r.stdout
    import json

    run = json.loads((out / "run.json").read_text())
    assert run["command"] == "dream" and run["options"]["octaves"] == 2
    for e in run["images"]:
        a = np.asarray(Image.open(out / e["output"] / "original.png"), np.float32)
        b = np.asarray(Image.open(out / e["output"] / "dream.png"), np.float32)
        assert a.shape == b.shape == (64, 64, 3) and np.abs(a - b).mean() > 1
    assert (out / "dream.png").exists()
    r = jaxinterp("dream", "--octaves", "9", "--out", str(tmp_path / "x"))
    assert r.returncode == 2 and "octaves=9" in r.stderr and not (tmp_path / "x").exists()
    r = jaxinterp("dream", "--layer", "conv9", "--out", str(tmp_path / "x"))
    assert r.returncode == 2 and "unknown layer 'conv9'" in r.stderr


@pytest.mark.slow
def test_invert_figure_and_quality_falling_with_depth(tmp_path):
    out = tmp_path / "inv.png"
    r = jaxinterp("invert", "--samples", "1", "--steps", "60", "--layers", "relu1_1,pool2",
                  "--out", str(out))
    assert r.returncode == 0, r.stderr
    psnr = [float(line.split("PSNR ")[1].split(" dB")[0]) for line in r.stdout.splitlines()
            if "PSNR" in line]
    assert len(psnr) == 2 and psnr[0] > psnr[1] + 5
    assert Image.open(out).size[0] > 300
    r = jaxinterp("invert", "--out", str(out))
    assert r.returncode == 2 and "--force" in r.stderr


@pytest.mark.slow
def test_attack_table_pictures_and_errors(tmp_path):
    out = tmp_path / "att"
    r = jaxinterp("attack", "--samples", "4", "--eps", "0,8/255", "--steps", "5", "--out", str(out))
    assert r.returncode == 0, r.stderr
    import json

    run = json.loads((out / "run.json").read_text())
    assert run["eps"] == [0.0, 8 / 255] and run["success_rate"][0] == 0.0
    assert "     8/255" in r.stdout
    for e in run["images"]:
        clean = np.asarray(Image.open(out / e["output"] / "clean.png"), np.float32)
        adv = np.asarray(Image.open(out / e["output"] / "adversarial.png"), np.float32)
        assert np.abs(clean - adv).max() <= 8 + 1  # 8/255 in 8-bit PNG levels (+ rounding)
        assert e["success"][1] == (e["clean"] != e["adversarial"])
    for bad, msg in ((["--eps", "x"], "not a number"), (["--eps=-1/255"], "budgets must be"),
                     (["--eps", "2"], "eps must be in [0, 1]"), (["--target", "dog"], "--target")):
        r = jaxinterp("attack", *bad, "--out", str(tmp_path / "y"))
        assert r.returncode == 2 and msg in r.stderr, (bad, r.stderr)


@pytest.mark.slow
def test_texture_and_style_commands(tmp_path):
    from jaxinterp.images import save_image

    import jax

    import jaxinterp as ji

    b = ji.data.shapes(jax.random.key(77), 2)
    save_image(np.asarray(b.images[0]), tmp_path / "a.png")
    save_image(np.asarray(b.images[1]), tmp_path / "b.png")
    r = jaxinterp("texture", str(tmp_path / "a.png"), "--steps", "12", "--snapshots", "3",
                  "--out", str(tmp_path / "tex"))
    assert r.returncode == 0, r.stderr
    first, final = (float(v) for v in r.stdout.split("loss ")[1].split(" (")[0].split(" -> "))
    assert final < first / 10
    assert {p.name for p in (tmp_path / "tex").iterdir()} == {"run.json", "source.png",
                                                               "result.png", "snapshots.png"}
    r = jaxinterp("style", str(tmp_path / "a.png"), str(tmp_path / "b.png"), "--steps", "6",
                  "--snapshots", "2", "--optimizer", "adam", "--out", str(tmp_path / "sty"))
    assert r.returncode == 0, r.stderr
    sty = tmp_path / "sty"
    assert {p.name for p in sty.iterdir()} == {"run.json", "content.png", "style.png",
                                              "result.png", "snapshots.png"}
    from jaxinterp.images import load_image

    style_in = np.asarray(Image.open(sty / "style.png"), np.float32)  # the input, not the result
    assert style_in.shape == (128, 128, 3)  # style's default size (README: --size 128)
    assert np.abs(style_in - 255 * load_image(tmp_path / "b.png", (128, 128))).max() <= 1
    assert Image.open(sty / "result.png").size == (128, 128)
    r = jaxinterp("style", str(tmp_path / "a.png"), str(tmp_path / "nope.png"),
                  "--out", str(tmp_path / "x"))
    assert r.returncode == 2 and "nope.png" in r.stderr and not (tmp_path / "x").exists()
    r = jaxinterp("texture", str(tmp_path / "a.png"), "--layers", "conv9", "--out",
                  str(tmp_path / "x"))
    assert r.returncode == 2 and "unknown layer 'conv9'" in r.stderr


@pytest.mark.slow
def test_concept_commands(tmp_path):
    r = jaxinterp("dissect", "--samples", "128", "--layers", "relu1_1,relu4_2", "--show", "2",
                  "--out", str(tmp_path / "dis"))
    assert r.returncode == 0, r.stderr
    import json

    run = json.loads((tmp_path / "dis" / "run.json").read_text())
    rows = {row["layer"]: row for row in run["summary"]}
    assert rows["relu1_1"]["color"] > 0 and rows["relu4_2"]["shape"] > 0
    units = json.loads((tmp_path / "dis" / "units.json").read_text())
    assert len(units["relu4_2"]) == 128 and (tmp_path / "dis" / "relu4_2.png").exists()
    r = jaxinterp("top", "--layer", "relu3_2", "--channel", "0,1", "--samples", "64", "--k", "3",
                  "--out", str(tmp_path / "top.png"))
    assert r.returncode == 0 and (tmp_path / "top.png").exists(), r.stderr
    r = jaxinterp("neighbors", "--samples", "128", "--queries", "2", "--out",
                  str(tmp_path / "nn.png"))
    assert r.returncode == 0, r.stderr
    lines = [line for line in r.stdout.splitlines() if line.startswith("query")]
    for line in lines:  # neighbours of the shipped model's last features share the class
        cls = line.split("(")[1].split(")")[0]
        assert line.split(": ", 1)[1].count(f" {cls} ") >= 4, line
    r = jaxinterp("embed", "--samples", "64", "--out", str(tmp_path / "emb.png"))
    assert r.returncode == 0 and (tmp_path / "emb.png").exists(), r.stderr
    r = jaxinterp("tcav", "--concept", "shape:star", "--concept", "color:nope", "--target", "star")
    assert r.returncode == 2 and "color:NAME" in r.stderr
    r = jaxinterp("dissect", "--layers", "fc", "--samples", "8", "--out", str(tmp_path / "x"))
    assert r.returncode == 2 and "no spatial maps" in r.stderr and not (tmp_path / "x").exists()


# --- in-process checks (issue #24): bounds, one-line errors, warnings, progress ---------------
# main() is called in this process (no interpreter start, no re-import of JAX); heavy library
# calls are replaced by stubs where only the command line's behaviour is checked.


@pytest.fixture
def cli(monkeypatch, capsys):
    """`cli(*args) -> (exit status, stdout, stderr)` of an in-process `main(args)`."""
    import jaxinterp.cli as cli_mod

    monkeypatch.setattr(cli_mod, "enable_compilation_cache", lambda *a: None)  # no global config

    def run(*args):
        try:
            code = cli_mod.main([str(a) for a in args])
        except SystemExit as e:
            code = e.code
        out, err = capsys.readouterr()
        return code, out, err

    return run


@pytest.mark.parametrize("args, msg", [
    (["attack", "--eps", "-1/255", "--out", "o"], "budgets must be >= 0, got -1/255"),
    (["attack", "--eps", "-1e-3", "--out", "o"], "budgets must be >= 0"),
    (["style", "c.png", "s.png", "--size", "100000", "--out", "o"], "at most 4096"),
    (["visualize", "--size", "5000", "--out", "x.png"], "at most 4096"),
    (["report", "run", "--thumb", "100000"], "at most 1024"),
    (["tcav", "--concept", "shape:star", "--target", "star", "--alpha", "2"], "in (0, 1)"),
    (["dissect", "--quantile", "1", "--out", "o"], "in (0, 1)"),
    (["dissect", "--iou-threshold", "1.5", "--out", "o"], "at most 1"),
    (["evaluate", "--metric-option", "sparseness.bogus=1", "--out", "o"],
     "sparseness has no option 'bogus'"),
    (["evaluate", "--metric-option", "sparseness", "--out", "o"], "expected METRIC.OPTION=VALUE"),
    (["texture", "s.png", "--snapshots", "1000", "--out", "o"], "at most 20"),
    (["dream", "--octave-scale", "0.5", "--out", "o"], ">= 1"),
    (["predict", "--batch", "100000"], "at most 4096"),
    (["filters", "--zoom", "1000", "--out", "x.png"], "at most 64"),
    (["top", "--layer", "relu1_1", "--k", "1000", "--out", "x.png"], "at most 64"),
    (["predict", "--bogus"], "unrecognized arguments: --bogus"),
    (["visualize"], "required: --out"),
])
def test_parser_errors_are_one_line_with_a_help_hint(cli, tmp_path, monkeypatch, args, msg):
    monkeypatch.chdir(tmp_path)
    code, out, err = cli(*args)
    assert code == 2 and msg in err, err
    assert len(err.strip().splitlines()) == 1 and err.rstrip().endswith("--help)"), err
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("args", [
    ["style", "nope-c.png", "nope-s.png", "--size", "1024"],    # checked before loading images
    ["visualize", "--size", "1024", "--channel", "0-7"],
    ["attack", "--samples", "64", "--batch", "64"],
    ["tcav", "--concept", "shape:star", "--target", "star", "--samples", "100000"],
])
def test_memory_estimate_refuses_before_allocating(cli, tmp_path, monkeypatch, args):
    monkeypatch.setenv("JAXINTERP_MEMORY", "50M")
    out = tmp_path / ("o.png" if args[0] == "visualize" else "o")
    code, _, err = cli(*args, *(["--out", out] if args[0] != "tcav" else []))
    assert code == 2 and "needs about" in err and "JAXINTERP_MEMORY" in err, err
    assert len(err.strip().splitlines()) == 1 and not out.exists()


def test_odd_and_huge_images_give_one_line_warnings(cli, tmp_path, monkeypatch):
    from PIL import Image as PILImage

    monkeypatch.setattr(PILImage, "MAX_IMAGE_PIXELS", 6400)  # 100x100: a "bomb" (a warning)
    Image.new("RGB", (1, 1), (200, 10, 10)).save(tmp_path / "dot.png")
    Image.new("RGB", (640, 10), (10, 200, 10)).save(tmp_path / "wide.png")
    Image.new("RGB", (100, 100), (10, 10, 200)).save(tmp_path / "big.png")
    code, out, err = cli("predict", tmp_path / "dot.png", tmp_path / "wide.png",
                         tmp_path / "big.png", "--top", "1")
    assert code == 0, err
    lines = [line for line in err.splitlines() if "arning" in line]  # not a status line
    assert all(line.startswith("jaxinterp: warning: ") for line in lines), err
    assert any("dot.png is 1x1: enlarged 64x" in line for line in lines), err
    assert any("wide.png is 640x10: stretched to 64x64" in line and "--fit crop" in line
               for line in lines), err
    assert any("big.png is 100x100" in line and "warning limit" in line for line in lines), err
    assert "DecompressionBombWarning" not in err and len(lines) == 3, err


def _fake_shapes(key, n, start=0, size=64):
    """A stand-in for `ji.data.shapes` (no generator to compile): grey images, cycling labels."""
    from types import SimpleNamespace

    i = np.arange(start, start + n)
    return SimpleNamespace(images=np.full((n, size, size, 3), 0.5, np.float32), labels=i % 8,
                           colors=i % 6, textures=i % 4)


def _slow(result, seconds=0.3):
    import time

    def call(*args, **kw):
        time.sleep(seconds)
        return result(*args, **kw)

    return call


def test_single_long_steps_show_a_status_line(cli, tmp_path, monkeypatch):
    """tcav, the t-SNE of embed and a one-batch attack are single calls without progress of
    their own: a status line appears on stderr (here after 0 s instead of BUSY_DELAY)."""
    import jaxinterp as ji
    import jaxinterp.cli.common as common
    from jaxinterp.adversarial.attacks import Robustness
    from jaxinterp.concepts.tcav import TCAV

    monkeypatch.setattr(common, "BUSY_DELAY", 0.0)
    monkeypatch.setattr(ji.data, "shapes", _fake_shapes)
    monkeypatch.setattr(ji.concepts, "features", lambda m, layer, data, **kw: np.zeros((16, 8)))
    monkeypatch.setattr(ji, "tcav", _slow(lambda *a, **k: TCAV(
        0.9, np.full(2, 0.9), np.full(2, 0.5), 0.01, True, np.ones(2))))
    code, out, err = cli("tcav", "--concept", "color:red", "--target", "star", "--samples",
                         "300", "--runs", "2")
    assert code == 0 and "color:red" in out, err
    assert "tcav color:red (2 runs) ...\ntcav color:red (2 runs): " in err, err
    monkeypatch.setattr(ji, "embed_2d", _slow(lambda feats, **k: np.zeros((len(feats), 2))))
    code, out, err = cli("embed", "--samples", "16", "--method", "tsne", "--out",
                         tmp_path / "e.png")
    assert code == 0 and "tsne of 16 points ..." in err, err

    def fake_robustness(m, x, y, eps, **kw):
        n = len(eps)
        return Robustness(np.asarray(eps), np.zeros((n, len(x)), bool), np.zeros(n), np.ones(n),
                          np.stack([x] * n))

    monkeypatch.setattr(ji, "robustness", _slow(fake_robustness))
    code, out, err = cli("attack", "--samples", "2", "--eps", "8/255", "--no-figures", "--out",
                         tmp_path / "att")
    assert code == 0 and "attack ..." in err, err


def test_visualize_without_a_relu_takes_the_plain_gradient(cli, tmp_path, monkeypatch):
    """A model with no ReLU (tanh here; a ViT) is rendered with the plain gradient by default
    (it used to stop with "no ReLU found"); asking for the redirect on it still raises."""
    import flax.linen as nn
    import jax
    import jax.numpy as jnp

    import jaxinterp as ji

    class Tanh(nn.Module):
        @nn.compact
        def __call__(self, x):
            x = jnp.tanh(nn.Conv(4, (3, 3), name="conv")(x))
            return nn.Dense(3, name="fc")(x.mean((1, 2)))

    variables = Tanh().init(jax.random.key(0), jnp.zeros((1, 16, 16, 3)))
    m = ji.wrap(Tanh(), variables, input_size=(16, 16), classes=["a", "b", "c"])
    monkeypatch.setattr(ji, "load_model", lambda name=None, **kw: m)
    code, _, err = cli("visualize", "--layer", "conv", "--channel", "0", "--size", "16",
                       "--steps", "1", "--out", tmp_path / "v.png")
    assert code == 0 and (tmp_path / "v.png").is_file(), err
    with pytest.raises(ji.rules.UnsupportedReLU, match="no ReLU found"):
        ji.visualize(m, ji.objectives.channel("conv", 0), size=16, steps=1, redirect_relu=True)


def test_texture_resume_is_reported_as_a_resume(cli, tmp_path, monkeypatch):
    """A run resumed from --checkpoint-dir has no loss history before the resumed step: run.json
    says where it resumed instead of calling the resumed step's loss the first one."""
    import json

    import jaxinterp as ji
    from jaxinterp.images import save_image

    save_image(np.random.default_rng(0).uniform(size=(32, 32, 3)), tmp_path / "a.png")
    real = ji.texture

    def killed_after_first_chunk(*args, progress=None, **kw):
        def stop(done, steps, carry):
            progress(done, steps, carry)
            raise KeyboardInterrupt

        return real(*args, progress=stop, **kw)

    args = ["texture", tmp_path / "a.png", "--steps", "4", "--snapshots", "2", "--size", "32",
            "--optimizer", "adam", "--checkpoint-dir", tmp_path / "ck"]
    monkeypatch.setattr(ji, "texture", killed_after_first_chunk)
    code, _, err = cli(*args, "--out", tmp_path / "t1")
    assert code == 130, err
    monkeypatch.setattr(ji, "texture", real)
    code, out, err = cli(*args, "--out", tmp_path / "t2")
    assert code == 0, err
    run = json.loads((tmp_path / "t2" / "run.json").read_text())
    assert run["resumed_at_step"] == 2 and run["first_loss"] is None, run
    assert run["loss_at_resume"] > 0 and "resumed at step 2" in out


def test_evaluate_writes_the_leaderboard_of_direct_metric_calls(tmp_path):
    import json

    import jax

    import jaxinterp as ji

    out = tmp_path / "ev"
    r = jaxinterp("evaluate", "--methods", "saliency,grad_cam", "--samples", "6", "--batch", "4",
                  "--metrics", "relevance_rank_accuracy,sparseness,faithfulness_correlation",
                  "--metric-samples", "10", "--metric-option", "sparseness.abs=False",
                  "--out", str(out))
    assert r.returncode == 0, r.stderr[-2000:]
    board = json.loads((out / "leaderboard.json").read_text())
    assert [row["method"] for row in board["rows"]] == ["saliency", "grad_cam"]
    m = ji.load_model()
    b = ji.data.shapes(jax.random.key(1000003), 6)  # two chunks: 4 + 2 images
    cam = np.concatenate([ji.grad_cam(m, b.images[s], b.labels[s])
                          for s in (slice(0, 4), slice(4, 6))])
    row = board["rows"][1]["scores"]
    want = ji.metrics.sparseness(m, b.images, b.labels, cam, abs=False)
    np.testing.assert_allclose(row["sparseness"]["mean"], want.mean(), rtol=1e-5)
    np.testing.assert_allclose(row["sparseness"]["ci95"],
                               1.96 * want.std(ddof=1) / np.sqrt(6), rtol=1e-4)
    # localisation sees |attributions| (saliency is signed: abs matters there)
    sal = np.concatenate([ji.saliency(m, b.images[s], b.labels[s])
                          for s in (slice(0, 4), slice(4, 6))])
    # --metric-option reached the call: saliency's signed sparseness differs from its default
    signed = ji.metrics.sparseness(m, b.images, b.labels, sal, abs=False)
    assert not np.allclose(signed, ji.metrics.sparseness(m, b.images, b.labels, sal))
    np.testing.assert_allclose(board["rows"][0]["scores"]["sparseness"]["mean"], signed.mean(),
                               rtol=1e-5)
    assert json.loads((out / "run.json").read_text())["metric_options"] == {
        "sparseness": {"abs": False}}
    rank = ji.metrics.relevance_rank_accuracy(m, b.images, b.labels, sal, b.mask, abs=True)
    assert not np.allclose(rank, ji.metrics.relevance_rank_accuracy(m, b.images, b.labels, sal,
                                                                    b.mask))
    np.testing.assert_allclose(board["rows"][0]["scores"]["relevance_rank_accuracy"]["mean"],
                               rank.mean(), rtol=1e-5)
    assert board["per_image"]["grad_cam"]["faithfulness_correlation"].__len__() == 6
    html = (out / "leaderboard.html").read_text()
    assert '<th data-col="1">relevance_rank_accuracy ↑</th>' in html
    assert html.count("<tr><td class=\"name\" data-v=") == 2 and "compute (s)" in html
    # the same table as the report's Leaderboard section
    ji.attribute_dataset(m, "shapes:4", ["saliency"], tmp_path / "run", batch_size=4,
                         metrics=())
    r = jaxinterp("report", str(tmp_path / "run"), "--leaderboard", str(out))
    assert r.returncode == 0, r.stderr[-2000:]
    page = (tmp_path / "run" / "report" / "index.html").read_text()
    assert "<h2>Leaderboard</h2>" in page and '<table id="leaderboard">' in page
    assert page.count('<td class="name" data-v="grad_cam">grad_cam</td>') == 1
    r = jaxinterp("report", str(tmp_path / "run"), "--leaderboard", str(tmp_path), "--force")
    assert r.returncode == 2 and "holds no leaderboard.json" in r.stderr
    assert (out / "leaderboard.csv").read_text().splitlines()[0].startswith(
        "method,relevance_rank_accuracy mean")
    r = jaxinterp("evaluate", "--metrics", "nonsense", "--out", str(tmp_path / "x"))
    assert r.returncode == 2 and "unknown metric 'nonsense'" in r.stderr


def test_compilation_cache_opt_out(monkeypatch):
    """--no-cache and JAXINTERP_CACHE=off leave JAX's persistent cache alone."""
    import jax

    from jaxinterp.cli import build_parser
    from jaxinterp.cli.common import enable_compilation_cache

    before = jax.config.jax_compilation_cache_dir
    assert enable_compilation_cache(False) is None
    for off in ("off", "", "0", "None"):
        monkeypatch.setenv("JAXINTERP_CACHE", off)
        assert enable_compilation_cache() is None
    assert jax.config.jax_compilation_cache_dir == before
    assert build_parser().parse_args(["--no-cache", "predict"]).no_cache
