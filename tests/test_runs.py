"""Data-set runs: the store against direct calls, devices and processes, kill -9 and resume, bad
files, deletion / insertion, and the HTML report in a real browser."""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np
import pytest

import jaxinterp as ji
from devices import run_on_devices
from jaxinterp.data import shapes_dataset

ROOT = Path(__file__).resolve().parents[1]
METHODS = ["saliency", "smooth_grad", "grad_cam"]
OPTIONS = {"smooth_grad": {"samples": 2}}


def cli(*args, env=None):
    return subprocess.Popen([sys.executable, "-m", "jaxinterp.cli", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, **(env or {})}, cwd=ROOT)


def finish(p, timeout=300):
    out, err = p.communicate(timeout=timeout)
    return p.returncode, out, err


def arrays_of(path):
    run = ji.open_run(path)
    return {name: np.asarray(run[name]) for name in run.arrays}


def assert_same_arrays(a, b, rtol=1e-5):
    assert a.keys() == b.keys()
    for name in a:
        x, y = a[name].astype(np.float64), b[name].astype(np.float64)
        scale = max(np.nanmax(np.abs(y)), 1e-12) if y.size else 1
        np.testing.assert_allclose(x, y, rtol=rtol, atol=rtol * scale, equal_nan=True,
                                   err_msg=name)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """24 shapes PNGs in class folders named as the model's classes, and one broken file."""
    d = tmp_path_factory.mktemp("images")
    b = ji.data.shapes(jax.random.key(9), 24, start=5000)
    for i in range(24):
        c = d / shapes_dataset.CLASSES[int(b.labels[i])]
        c.mkdir(exist_ok=True)
        ji.images.save_image(np.asarray(b.images[i]), c / f"{i:03d}.png")
    (d / "star" / "zz-broken.png").write_bytes(b"not an image")
    return d


@pytest.fixture(scope="module")
def reference(tmp_path_factory, default_model):
    out = tmp_path_factory.mktemp("ref") / "run"
    s = ji.attribute_dataset(default_model, "shapes:20", METHODS, out, batch_size=8,
                             options=OPTIONS, metrics=("deletion",), key=3)
    return out, s


def test_run_equals_direct_calls_and_resumes_nothing_twice(reference, default_model):
    out, summary = reference
    assert summary["complete"] and summary["computed"] == 3 and not summary["failed"]
    run = ji.open_run(out)
    assert run.complete and run.files == [f"shapes:{i}" for i in range(20)]
    b = ji.data.shapes(jax.random.key(0), 20)
    np.testing.assert_array_equal(run.labels, b.labels)
    m = default_model
    pred = np.asarray(m(b.images)[0]).argmax(1)
    np.testing.assert_array_equal(run.predictions, pred)
    np.testing.assert_array_equal(run["target"][:], pred)
    keys = jax.vmap(lambda i: jax.random.fold_in(jax.random.key(3), i))(np.arange(20))
    for name in METHODS:
        direct = np.asarray(ji.attribution.METHODS[name](m, b.images, pred, key=keys,
                                                         **OPTIONS.get(name, {})))
        stored = run[name][:]
        assert run[name].shape == direct.shape and run[name][5:7].shape[0] == 2
        np.testing.assert_allclose(stored, direct, rtol=1e-4, atol=1e-5 * np.abs(direct).max())
    curves = ji.evaluation.deletion_insertion(m, b.images[:8], pred[:8], run["grad_cam"][:8])
    np.testing.assert_allclose(run["grad_cam.deletion_auc"][:8], curves["deletion_auc"],
                               rtol=1e-4)
    assert 0.5 <= run["grad_cam.pointing"][:].mean() <= 1  # shapes masks: stored per image
    again = ji.attribute_dataset(m, "shapes:20", METHODS, out, batch_size=8, options=OPTIONS,
                                 metrics=("deletion",), key=3)
    assert again["computed"] == 0 and again["skipped"] == 3
    with pytest.raises(FileExistsError, match="holds another run"):
        ji.attribute_dataset(m, "shapes:20", ["saliency"], out, batch_size=8)


def test_float16_storage(reference, default_model, tmp_path):
    ji.attribute_dataset(default_model, "shapes:20", ["saliency"], tmp_path / "r", batch_size=8,
                         dtype="float16", metrics=())
    half = ji.open_run(tmp_path / "r")["saliency"]
    assert half.dtype == np.float16
    full = ji.open_run(reference[0])["saliency"][:]
    np.testing.assert_allclose(half[:].astype(np.float32), full, rtol=1e-3,
                               atol=1e-3 * np.abs(full).max())


SHARDED = """
import sys
import jaxinterp as ji, jax
assert len(jax.local_devices()) == 4
ji.attribute_dataset(ji.load_model(), "shapes:20", ["saliency", "smooth_grad"], sys.argv[1],
                     batch_size=8, options={options}, metrics=(), key=3)
"""


def test_four_devices_equal_one(reference, tmp_path):
    p = run_on_devices(SHARDED.format(options=OPTIONS), str(tmp_path / "r"))
    assert p.returncode == 0, p.stderr[-3000:]
    four, one = arrays_of(tmp_path / "r"), arrays_of(reference[0])
    assert set(four) == {"logits", "prediction", "target", "score", "saliency", "smooth_grad",
                         "saliency.pointing", "saliency.mass", "smooth_grad.pointing",
                         "smooth_grad.mass"}
    assert_same_arrays(four, {k: one[k] for k in four})


def _free_port():
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def test_two_processes_equal_one(folder, default_model, tmp_path):
    one = tmp_path / "one"
    args = ["attribute", "--data", str(folder), "--method", "saliency,grad_cam", "--batch", "4",
            "--metrics", "insertion", "--target", "label"]
    port = _free_port()
    procs = [cli(*args, "--out", str(tmp_path / "two"), "--coordinator", f"localhost:{port}",
                 "--num-processes", "2", "--process-id", str(i)) for i in range(2)]
    single = cli(*args, "--out", str(one))
    results = [finish(p) for p in (*procs, single)]
    for code, out, err in results:
        assert code == 1, err[-3000:]  # the broken file: reported, the rest written
        assert "zz-broken.png" in err
    assert "[process 1/2]" in results[1][1]
    markers = [json.loads(f.read_text()) for f in sorted((tmp_path / "two" / "done").iterdir())]
    assert {mk["process"] for mk in markers} == {0, 1} and len(markers) == 7
    assert_same_arrays(arrays_of(tmp_path / "two"), arrays_of(one))
    run = ji.open_run(one)
    broken = run.files.index("star/zz-broken.png")
    assert run.predictions[broken] == -1 and np.isnan(run["saliency"][broken]).all()
    ok = np.delete(np.arange(len(run)), broken)
    assert (run.predictions[ok] == run.labels[ok]).mean() > 0.9  # the trained default model
    assert list(run.failed) == ["star/zz-broken.png"]


def test_kill_9_then_resume(folder, tmp_path):
    out = tmp_path / "run"
    args = ["attribute", "--data", str(folder), "--method", "saliency,smooth_grad",
            "--samples-sg", "2", "--batch", "2", "--metrics", "", "--out", str(out)]
    p = cli(*args)
    deadline = time.time() + 240
    while time.time() < deadline and p.poll() is None:
        if len(list((out / "done").glob("*.json"))) >= 2 if (out / "done").is_dir() else False:
            break
        time.sleep(0.01)
    assert p.poll() is None, "the run ended before it could be killed"
    os.kill(p.pid, signal.SIGKILL)
    p.wait()
    before = {f.name for f in (out / "done").glob("*.json")}
    assert not ji.open_run(out).complete and len(before) < 13
    code, stdout, err = finish(cli(*args))
    assert code == 1, err[-3000:]
    computed = int(stdout.split(" batches computed")[0].split()[-1])
    assert computed == 13 - len(before)  # no finished batch recomputed
    run = ji.open_run(out)
    assert run.complete and len(run.files) == len(set(run.files)) == 25
    markers = ji.runs.store.read_markers(out)
    assert sorted(mk["batch"] for mk in markers) == list(range(13))
    clean = tmp_path / "clean"
    code, _, err = finish(cli(*args[:-1], str(clean)))
    assert code == 1, err[-3000:]
    assert_same_arrays(arrays_of(out), arrays_of(clean))


def test_deletion_insertion_rank_random_below_saliency_and_grad_cam(default_model):
    b = ji.data.shapes(jax.random.key(5), 24, start=90_000)
    x, y = b.images, b.labels
    auc = {}
    for name in ("saliency", "grad_cam", "random"):
        a = (jax.random.uniform(jax.random.key(1), x.shape[:3]) if name == "random"
             else ji.attribution.METHODS[name](default_model, x, y))
        r = ji.evaluation.deletion_insertion(default_model, x, y, a, steps=8)
        assert r["deletion"].shape == (24, 9)
        np.testing.assert_allclose(r["deletion"][:, 0], r["insertion"][:, -1], rtol=1e-5)
        auc[name] = (r["deletion_auc"].mean(), r["insertion_auc"].mean())
    for name in ("saliency", "grad_cam"):
        assert auc[name][0] < auc["random"][0] and auc[name][1] > auc["random"][1], auc


def _chromium():
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    try:
        import playwright.sync_api  # noqa: F401 — present?
    except ImportError:
        path = None
    if path is None and os.environ.get("JAXINTERP_BROWSER_TESTS"):
        pytest.fail("JAXINTERP_BROWSER_TESTS is set but chromium or playwright is missing")
    if path is None:
        pytest.skip("needs Debian's chromium and the playwright package (.ci/run installs them)")
    return path


def test_report_in_headless_chromium(reference, tmp_path):
    executable = _chromium()
    from playwright.sync_api import sync_playwright

    out, _ = reference
    index = ji.runs.report.write_report(out, tmp_path / "report", limit=12)
    with pytest.raises(FileExistsError, match="--force"):
        ji.runs.report.write_report(out, tmp_path / "report")
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=executable, args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking",
            "--disable-component-update", "--disable-sync", "--no-first-run"])
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        errors = []
        page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(index.as_uri())
        page.wait_for_load_state("load")
        images = page.evaluate("Array.from(document.images).map(i => i.naturalWidth)")
        assert len(images) == 12 * (1 + 3 * len(METHODS)) and min(images) > 0
        column = "grad_cam deletion_auc"
        heads = page.eval_on_selector_all("#grid th", "hs => hs.map(h => h.textContent)")
        i = heads.index(column)

        def values():
            return page.eval_on_selector_all(
                "#grid tbody tr", f"rs => rs.map(r => parseFloat(r.cells[{i}].textContent))")

        assert values() != sorted(values(), reverse=True)
        page.click(f"#grid th:text-is('{column}')")
        assert values() == sorted(values(), reverse=True)
        page.click(f"#grid th:text-is('{column}')")
        assert values() == sorted(values())
        page.fill("#filter", "shapes:1")  # shapes:1, shapes:10, shapes:11
        visible = page.eval_on_selector_all("#grid tbody tr:not([hidden])", "rs => rs.length")
        assert visible == 3
        page.select_option("#view", "heat")
        shown = page.eval_on_selector_all("#grid img.view:not([hidden])",
                                          "is => is.map(i => i.className)")
        assert shown and all("view-heat" in c for c in shown)
        page.screenshot(path=str(tmp_path / "report.png"))
        browser.close()
    assert not errors, errors
    assert (tmp_path / "report.png").stat().st_size > 10_000
