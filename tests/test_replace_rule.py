"""The replace rule of every directory jaxinterp writes, as a property: for random trees of the
library's files and a user's files, `force` replacements of a data-set run (successful, refused,
and killed with SIGKILL at a random file operation, in a subprocess) never remove a user's file
and always leave at the output name either the old complete run or the new complete one.

The subprocess drives the same functions `attribute_dataset` uses for its directory (`DirLock`,
`store.prepare_dir`, chunk and marker writes, `store.finish_run`), without importing JAX, so a
case costs a fraction of a second; tests/test_runs.py covers `attribute_dataset` itself."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]

# Loads jaxinterp.outputs and jaxinterp.runs.store without the package's __init__ (no JAX).
DRIVER = r"""
import json, os, signal, sys, types
from pathlib import Path
root, cfg = sys.argv[1], json.loads(sys.argv[2])
for name, sub in (("jaxinterp", "jaxinterp"), ("jaxinterp.runs", "jaxinterp/runs")):
    mod = types.ModuleType(name)
    mod.__path__ = [os.path.join(root, sub)]
    sys.modules[name] = mod
import numpy as np
from jaxinterp import outputs
from jaxinterp.runs import store

calls = [0]
def armed(fn):
    def wrapped(*a, **k):
        calls[0] += 1
        if calls[0] == cfg["kill_at"]:
            os.kill(os.getpid(), signal.SIGKILL)
        return fn(*a, **k)
    return wrapped
for name in ("rename", "replace", "unlink", "rmdir", "mkdir", "ftruncate"):
    setattr(os, name, armed(getattr(os, name)))
outputs._renameat2 = armed(outputs._renameat2)

run = Path(cfg["run"])
manifest = {"format": store.FORMAT, "version": store.VERSION, "digest": cfg["digest"],
            "files": None, "count": 4, "num_batches": 2, "batch_size": 2, "methods": ["x"],
            "complete": False}
arrays = {"x": ((4,), (2,), "float32"), "computed": ((4,), (2,), "uint8")}
try:
    with outputs.DirLock(run):
        out = store.prepare_dir(run, manifest, arrays, cfg["force"])
        done = store.done_batches(out)
        for b in range(2):
            if b in done:
                continue
            store.open_array(out / "arrays" / "x")[2 * b:2 * b + 2].write(
                np.full(2, cfg["value"], np.float32)).result()
            store.open_array(out / "arrays" / "computed")[2 * b:2 * b + 2].write(
                np.ones(2, np.uint8)).result()
            store.atomic_write(out / "done" / f"{b}.json", json.dumps({"batch": b}))
        store.finish_run(out, run)
except FileExistsError as e:
    print("refused:", e)
    sys.exit(2)
print("calls", calls[0])
"""


def drive(run, digest, value, *, force=True, kill_at=0):
    cfg = {"run": str(run), "digest": digest, "value": value, "force": force, "kill_at": kill_at}
    return subprocess.run([sys.executable, "-c", DRIVER, str(ROOT), json.dumps(cfg)],
                          capture_output=True, text=True, timeout=120)


def make_run(run, digest, value):
    """The same run as the driver's, written in this process (no subprocess start)."""
    from jaxinterp.runs import store

    manifest = {"format": store.FORMAT, "version": store.VERSION, "digest": digest,
                "files": None, "count": 4, "num_batches": 2, "batch_size": 2, "methods": ["x"],
                "complete": False}
    out = store.prepare_dir(run, manifest, {"x": ((4,), (2,), "float32"),
                                            "computed": ((4,), (2,), "uint8")}, False)
    store.open_array(out / "arrays" / "x").write(np.full(4, value, np.float32)).result()
    store.open_array(out / "arrays" / "computed").write(np.ones(4, np.uint8)).result()
    for b in range(2):
        store.atomic_write(out / "done" / f"{b}.json", json.dumps({"batch": b}))
    store.finish_run(out, run)


def snapshot(d):
    return {str(p.relative_to(d)): p.read_bytes() for p in Path(d).rglob("*") if p.is_file()}


def is_complete_run(run, digest, value):
    import jaxinterp as ji

    try:
        r = ji.open_run(run)
    except (FileNotFoundError, ValueError):
        return False
    return (r.manifest["digest"] == digest and r.manifest["complete"] and r.complete
            and np.array_equal(r["x"][:], np.full(4, value, np.float32)))


FOREIGN_PLACES = ["notes.txt", "report/analysis.md", "arrays/x/README", "done/mine.json",
                  "mine/deep/file.bin", "arrays/mine.npy", "report/img/extra.png", ".hidden"]
REPORT = {"index.html": b"<html></html>", ".jaxinterp-report": b"written by jaxinterp report\n",
          "img/0.png": b"png", "img/0_x_heat.png": b"png"}


# (what the case does, the range its SIGKILL is drawn from, whether an earlier other replacement
# was killed first): a user's file in the run (refused), no kill (success), killed while the new
# run is written (file operations 1-13 of a replacement), at the swap (14, 15: the exchange, or
# the first removal after it), while the old run is removed (15-28)
CASES = [("foreign", (1, 30), True), ("foreign", None, False), ("success", None, True),
         ("kill", (1, 14), True), ("kill", (14, 16), False), ("kill", (14, 16), False),
         ("kill", (15, 29), False)]


@pytest.mark.parametrize("case", range(len(CASES)))
def test_force_replacement_never_removes_foreign_files_and_is_all_or_nothing(tmp_path, case):
    kind, kill_range, leftover = CASES[case]
    rng = np.random.default_rng(1000 + case)
    run = tmp_path / "R"
    make_run(run, "old", 1.0)
    if rng.random() < 0.6:
        for name, data in REPORT.items():
            (run / "report" / name).parent.mkdir(parents=True, exist_ok=True)
            (run / "report" / name).write_bytes(data)
    foreign = {tmp_path / "mine.txt": b"beside the run"}
    if kind == "foreign":  # a user's files in the run: the force must be refused, nothing changed
        places = [p for p in FOREIGN_PLACES if (run / "report").is_dir() or "report/" not in p]
        for place in rng.choice(places, size=int(rng.integers(1, 4)), replace=False):
            foreign[run / place] = rng.bytes(8)
    staging = tmp_path / ".R.replacing"
    old = ("old", 1.0)
    if leftover:  # an earlier, other replacement killed at some point (or not)
        drive(run, "other", 3.0, kill_at=int(rng.integers(5, 32)))
        if is_complete_run(run, "other", 3.0):
            old = ("other", 3.0)
    for path, data in foreign.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    before = snapshot(run)
    kill_at = 0 if kill_range is None else int(rng.integers(*kill_range))
    p = drive(run, "new", 2.0, kill_at=kill_at)
    killed = p.returncode == -9
    for path, data in foreign.items():  # never a user's file removed or changed
        assert path.read_bytes() == data, (path, p.stdout, p.stderr[-2000:])
    if kind == "foreign":
        assert p.returncode in (2, -9), p.stderr[-2000:]
        assert snapshot(run) == before
        return
    old_ok = snapshot(run) == before and is_complete_run(run, *old)
    new_ok = is_complete_run(run, "new", 2.0)
    assert old_ok or new_ok, (kill_at, p.returncode, p.stdout, p.stderr[-2000:])
    assert killed == (kind == "kill"), (kill_at, p.returncode, p.stderr[-2000:])
    if not killed:
        assert p.returncode == 0 and new_ok, p.stderr[-2000:]
    # the same command again (after a kill: resumes) ends with the new complete run
    p = drive(run, "new", 2.0)
    assert p.returncode == 0, p.stderr[-2000:]
    assert is_complete_run(run, "new", 2.0), (kill_at, snapshot(run).keys())
    assert not staging.exists(), (kill_at, snapshot(staging).keys())
    assert not (tmp_path / ".R.lock").exists()
    assert "report" not in os.listdir(run)  # the old run's report went with it
    for path, data in foreign.items():
        assert path.read_bytes() == data
