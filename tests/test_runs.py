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
from browser import chromium

import jaxinterp as ji
from devices import run_on_devices
from jaxinterp.data import shapes_dataset

ROOT = Path(__file__).resolve().parents[1]
# a gradient, a keyed multi-pass, a CAM, a per-channel CAM and a keyed perturbation method
METHODS = ["saliency", "smooth_grad", "grad_cam", "score_cam", "kernel_shap"]
OPTIONS = {"smooth_grad": {"samples": 2}, "kernel_shap": {"samples": 8, "patch": 16}}


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


@pytest.fixture(scope="session")
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


@pytest.fixture(scope="session")
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


@pytest.mark.slow
def test_four_devices_equal_one(reference, tmp_path):
    p = run_on_devices(SHARDED.format(options=OPTIONS), str(tmp_path / "r"))
    assert p.returncode == 0, p.stderr[-3000:]
    four, one = arrays_of(tmp_path / "r"), arrays_of(reference[0])
    assert set(four) == {"logits", "prediction", "target", "score", "saliency", "smooth_grad",
                         "saliency.pointing", "saliency.mass", "smooth_grad.pointing",
                         "smooth_grad.mass", "label", "computed"}
    assert_same_arrays(four, {k: one[k] for k in four})


def _free_port():
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


@pytest.mark.slow
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


@pytest.mark.slow
def test_kill_9_then_resume(folder, tmp_path):
    out = tmp_path / "run"
    args = ["attribute", "--data", str(folder), "--method", "saliency,smooth_grad",
            "--samples-sg", "2", "--batch", "2", "--metrics", "", "--out", str(out)]
    p = cli(*args)
    deadline = time.time() + 240

    def markers():  # finished batches: `<b>.json` (a kill may leave a `.<b>.json.partial-…`)
        done = out / "done"
        return {f.name for f in done.glob("[0-9]*.json")} if done.is_dir() else set()

    while time.time() < deadline and p.poll() is None:
        if len(markers()) >= 2:
            break
        time.sleep(0.01)
    assert p.poll() is None, "the run ended before it could be killed"
    os.kill(p.pid, signal.SIGKILL)
    p.wait()
    before = markers()
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


@pytest.mark.slow  # 18-25 s end to end; CI's slow step runs it
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


def tree(d):
    """Every file under `d` with its bytes."""
    return {str(p.relative_to(d)): p.read_bytes() for p in Path(d).rglob("*") if p.is_file()}


def small_folder(folder, d, n=3):
    """The first `n` readable PNGs of `folder`, copied to `d` with their class folders (no
    image generation: nothing to compile)."""
    for f in sorted(folder.rglob("*.png"))[:n + 1]:
        if f.name != "zz-broken.png" and n > 0:
            (d / f.relative_to(folder)).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(f, d / f.relative_to(folder))
            n -= 1
    return d


def stop_after(count):
    """A progress wrapper that raises KeyboardInterrupt (a Ctrl-C) once `count` items passed."""
    def progress(it, total):
        def gen():
            for k, x in enumerate(it):
                if k >= count(total):
                    raise KeyboardInterrupt
                yield x
        return gen()
    return progress


@pytest.fixture(scope="session")
def interrupted(tmp_path_factory, default_model):
    """shapes:20 in batches of 8 (as `reference`: no new compilation), interrupted by a Ctrl-C
    after the first batch (today's main: after its first batch too): rows 8-19 never run."""
    out = tmp_path_factory.mktemp("interrupted") / "run"
    with pytest.raises(KeyboardInterrupt):
        ji.attribute_dataset(default_model, "shapes:20", ["saliency", "grad_cam"], out,
                             batch_size=8, metrics=("deletion",), key=3,
                             progress=stop_after(lambda total: 1))
    return out


@pytest.fixture(scope="session")
def interrupted_report(interrupted):
    """The report of `interrupted` (its first 12 rows: 8 computed, 4 not)."""
    return ji.runs.report.write_report(interrupted, interrupted.parent / "report", limit=12)


def test_force_refuses_user_files_before_touching_anything(default_model, tmp_path):
    """#24.1: a user's file in the run, or in its report/, makes --force refuse, nothing changed
    (today's main deleted arrays/, done/, run.json, report/ first); a clean --force replaces."""
    out = tmp_path / "R"
    ji.attribute_dataset(default_model, "shapes:8", ["saliency"], out, batch_size=8, metrics=())
    (out / "notes.txt").write_text("mine")
    before = tree(out)
    with pytest.raises(FileExistsError, match="did not write.*notes.txt"):
        ji.attribute_dataset(default_model, "shapes:8", ["grad_cam"], out, batch_size=8,
                             metrics=(), force=True)
    assert tree(out) == before and sorted(os.listdir(tmp_path)) == ["R"]
    (out / "notes.txt").unlink()
    ji.runs.report.write_report(out, limit=2)
    (out / "report" / "analysis.md").write_text("mine")
    before = tree(out)
    for replace in (lambda: ji.attribute_dataset(default_model, "shapes:8", ["grad_cam"], out,
                                                 batch_size=8, metrics=(), force=True),
                    lambda: ji.runs.report.write_report(out, limit=2, force=True)):
        with pytest.raises(FileExistsError, match="analysis.md"):
            replace()
        assert tree(out) == before and sorted(os.listdir(tmp_path)) == ["R"]
    (out / "report" / "analysis.md").unlink()
    ji.attribute_dataset(default_model, "shapes:8", ["grad_cam"], out, batch_size=8, metrics=(),
                         force=True)
    run = ji.open_run(out)
    assert run.methods == ["grad_cam"] and run.complete and "report" not in os.listdir(out)
    assert sorted(os.listdir(tmp_path)) == ["R"]  # no lock, no staging left


def test_interrupted_run_reads_missing_rows_as_missing(interrupted, interrupted_report):
    """#24.2: rows never computed read as -1 / NaN (today: prediction 0, "circle", AUC 0)."""
    run = ji.open_run(interrupted)
    done = sorted(mk["batch"] for mk in ji.runs.store.read_markers(interrupted))
    assert not run.complete and done == [0]
    computed = np.arange(20) < 8
    np.testing.assert_array_equal(run.computed, computed)
    assert run.num_missing == 12 and "12 of 20 images not computed" in repr(run)
    assert (run.predictions[~computed] == -1).all() and (run.predictions[computed] >= 0).all()
    assert np.isnan(run["score"][:][~computed]).all()
    assert np.isnan(run["grad_cam.deletion_auc"][~computed]).all()
    assert np.isnan(run["saliency"][11]).all() and not np.isnan(run["saliency"][0]).any()
    assert np.isnan(run["logits"][5:10][3:]).all() and (run["target"][[0, 9]] == [
        run.predictions[0], -1]).all()
    assert (run.labels[~computed] == -1).all()
    html = interrupted_report.read_text()
    assert html.count('<tr data-search') == 12 and html.count('class="missing"') == 4
    assert "The run is incomplete" in html and ">12</span> not computed" in html


def test_out_inside_data_is_refused_and_outputs_are_not_data(folder, default_model, tmp_path):
    """#24.3: --out inside --data is refused before anything is written; directories jaxinterp
    wrote (runs, reports, their temporary names) are never read as images."""
    d = small_folder(folder, tmp_path / "imgs")
    names = ji.runs.open_source(str(d)).names
    out = d / "circle" / "out"
    with pytest.raises(ValueError, match="inside --data"):
        ji.attribute_dataset(default_model, str(d), ["saliency"], out, batch_size=8, metrics=())
    assert not out.exists() and not (d / "circle" / ".out.lock").exists()
    for sub, marker in (("run", "run.json"), ("report", ".jaxinterp-report"),
                        (".run.replacing", "x.png"), ("synth", "run.json")):
        (d / "circle" / sub / "img").mkdir(parents=True)
        ji.images.save_image(np.zeros((8, 8, 3)), d / "circle" / sub / "img" / "0.png")
        (d / "circle" / sub / marker).write_text(
            json.dumps({"synth": {"entries": []}, "run": {"format": "jaxinterp-run"}}.get(sub, {})))
    assert ji.runs.open_source(str(d)).names == names
    with pytest.raises(ValueError, match="jaxinterp wrote"):
        ji.runs.open_source(str(d / "circle" / "run" / "img"))


HOLD_LOCK = """
import importlib.util, sys, time
spec = importlib.util.spec_from_file_location("outputs", sys.argv[1])
outputs = importlib.util.module_from_spec(spec); spec.loader.exec_module(outputs)
outputs.DirLock(sys.argv[2]).acquire()
print("locked", flush=True)
time.sleep(600)
"""


def test_concurrent_run_is_refused_naming_the_holder_and_a_dead_lock_is_taken_over(
        default_model, tmp_path):
    """#24.4: a second run to a locked --out raises (CLI: exit 2) naming the holder's PID; the
    lock of a SIGKILLed holder is taken over."""
    out = tmp_path / "R"
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK,
                               str(ROOT / "jaxinterp" / "outputs.py"), str(out)],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(ji.outputs.LockedError, match=f"process {holder.pid}"):
            ji.attribute_dataset(default_model, "shapes:8", ["saliency"], out, batch_size=8,
                                 metrics=())
        assert not out.exists()
        code, _, err = finish(cli("attribute", "--data", "shapes:8", "--method", "saliency",
                                  "--batch", "8", "--metrics", "", "--out", str(out)))
        assert code == 2 and f"process {holder.pid}" in err, err[-2000:]
    finally:
        holder.kill()
        holder.wait()
    assert (tmp_path / ".R.lock").exists()  # the dead holder's lock file is still there
    s = ji.attribute_dataset(default_model, "shapes:8", ["saliency"], out, batch_size=8,
                             metrics=())
    assert s["complete"] and sorted(os.listdir(tmp_path)) == ["R"]


def test_changed_input_is_recomputed_and_progress_counts_real_images(folder, default_model,
                                                                     tmp_path):
    """#24.4: a file replaced under the same name gets its batch recomputed (today: "run
    complete", old results kept); a file only touched is not; the progress callback counts
    images, not padded batch rows."""
    d = small_folder(folder, tmp_path / "imgs", n=9)
    out = tmp_path / "R"
    seen = []

    def progress(it, total):
        seen.append(total)
        return (seen.append(x) or x for x in it)

    s = ji.attribute_dataset(default_model, str(d), ["saliency"], out, batch_size=8, metrics=(),
                             progress=progress)
    assert s["computed"] == 2 and seen == [9, *range(9)]  # 9 images, not 2 batches of 8
    files = ji.open_run(out).files
    changed, touched = d / files[0], d / files[8]
    st = changed.stat()
    other = [f for f in sorted(folder.rglob("*.png")) if f.name != "zz-broken.png"][9]
    shutil.copy(other, changed)  # other content
    os.utime(changed, ns=(st.st_atime_ns, st.st_mtime_ns))  # ... with the same mtime
    t = touched.stat().st_mtime_ns + 5 * 10**9
    os.utime(touched, ns=(t, t))  # same content, other mtime
    again = ji.attribute_dataset(default_model, str(d), ["saliency"], out, batch_size=8,
                                 metrics=())
    assert again["computed"] == 1 and again["skipped"] == 1 and again["complete"]
    fresh = ji.attribute_dataset(default_model, str(d), ["saliency"], tmp_path / "fresh",
                                 batch_size=8, metrics=())
    assert fresh["complete"]
    assert_same_arrays(arrays_of(out), arrays_of(tmp_path / "fresh"))


def test_shapes_of_any_count_start_at_once(default_model, tmp_path):
    """#24.4: shapes:100000000 generates nothing up front (today: every image, for its labels:
    80 s, 2.3 GB); labels are computed and stored per batch."""
    t = time.time()
    source = ji.runs.open_source("shapes:100000000")
    assert time.time() - t < 1 and len(source) == 10**8 and source.names[-1] == "shapes:99999999"
    out = tmp_path / "R"
    with pytest.raises(KeyboardInterrupt):  # after the first batch
        ji.attribute_dataset(default_model, "shapes:100000000", ["saliency"], out, batch_size=8,
                             metrics=(), progress=stop_after(lambda total: 1))
    run = ji.open_run(out)
    assert len(run) == 10**8 and not run.complete and run.num_missing == 10**8 - 8
    b = ji.data.shapes(jax.random.key(0), 8)
    np.testing.assert_array_equal(run["label"][:8], b.labels)
    np.testing.assert_array_equal(run["prediction"][6:10], [*run["prediction"][6:8], -1, -1])


_chromium = chromium


def test_report_in_headless_chromium(reference, interrupted, interrupted_report, tmp_path):
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

        # #24.2: an interrupted run: missing rows marked, means over computed rows only
        run = ji.open_run(interrupted)
        page.goto(interrupted_report.as_uri())
        page.wait_for_load_state("load")
        assert page.inner_text("#not-computed") == "12" and page.is_visible("#incomplete")
        rows = page.eval_on_selector_all("#grid tbody tr", """rs => rs.map(r => ({
            missing: r.classList.contains('missing'), grey: getComputedStyle(r.cells[0]).color,
            cells: Array.from(r.cells).map(c => c.textContent.trim())}))""")
        assert [r["missing"] for r in rows] == [False] * 8 + [True] * 4
        for r in rows[8:]:
            assert r["cells"][2] == "not computed" and r["cells"][3] == "—"
            assert r["cells"][5:7] == ["not computed"] * 2 and r["grey"] == "rgb(153, 153, 153)"
        images = page.evaluate("Array.from(document.images).map(i => i.naturalWidth)")
        assert len(images) == 12 + 8 * 3 * 2 and min(images) > 0
        auc = np.asarray(run["grad_cam.deletion_auc"][:8], np.float64)
        table = page.eval_on_selector_all(
            "#metrics tbody tr", "rs => rs.map(r => Array.from(r.cells).map(c => c.textContent))")
        shown_mean = dict((r[0], r[1]) for r in table)["grad_cam"]
        assert shown_mean == f"{auc.mean():.3f}" != f"{auc.sum() / 20:.3f}"
        counts = page.eval_on_selector_all("#classes tbody tr",
                                           "rs => rs.map(r => +r.cells[1].textContent)")
        assert sum(counts) == 8
        browser.close()
    assert not errors, errors
    assert (tmp_path / "report.png").stat().st_size > 10_000
