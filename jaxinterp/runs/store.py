"""A run directory: chunked zarr arrays (through tensorstore), a manifest, and one marker per
finished batch.

    RUN/run.json             manifest: files, labels, methods, model, settings; "complete" at the end
    RUN/arrays/<name>/       zarr v2 arrays, one chunk per batch along the first axis:
                             <method> [N, H, W(, 3)], logits [N, K], target [N], ...
    RUN/arrays/computed      uint8 [N]: 1 for the rows of a finished batch (written after the
                             batch's other arrays, before its marker)
    RUN/done/<batch>.json    written (atomically) after every array of the batch is written; it
                             records each input file's size, mtime and SHA-256, so a file
                             replaced under the same name gets its batch recomputed
    RUN/report/              `jaxinterp report RUN` (optional)

Rows of batches without a marker are "not computed": `open_run` reads them as missing
(prediction / target -1, NaN floats) and `Run.computed` says which rows are there.

A batch without its marker is recomputed when the same command runs again; its chunks are then
simply overwritten. So a crash (kill -9 included) loses at most the batch in flight, per process.
Other tools read the arrays directly: `zarr.open(RUN/arrays/saliency)`, tensorstore, or
`ji.open_run(RUN)`.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import numpy as np

from jaxinterp.outputs import foreign_files, remove_ours, replace_dir, write_file

FORMAT = "jaxinterp-run"
VERSION = 1


def atomic_write(path: Path, text: str) -> None:
    """Writes `text` to `path` under a temporary name and renames it into place."""
    write_file(path, lambda tmp: tmp.write_text(text), force=True)


REPORT_MARKER = ".jaxinterp-report"
_CHUNK = re.compile(r"^\d+(\.\d+)*$")


def report_entry_is_ours(rel: str, is_dir: bool) -> bool:
    """Whether `rel` (a path inside a report directory) is something `write_report` writes."""
    if is_dir:
        return rel == "img"
    if rel in ("index.html", REPORT_MARKER):
        return True
    return bool(re.fullmatch(r"img/\d+(_[A-Za-z0-9_.+-]+)?\.png", rel))


def run_entry_is_ours(rel: str, is_dir: bool) -> bool:
    """Whether `rel` (a path inside a data-set run directory) is something jaxinterp writes:
    the manifest, `arrays/<name>/` zarr files, `done/<b>.json` markers, the report (and the
    temporary names of each); anything else is a user's file."""
    parts = rel.split("/")
    top = parts[0]
    if top == "report" or re.fullmatch(r"\.report\.partial-.*", top):
        return len(parts) == 1 and is_dir or report_entry_is_ours("/".join(parts[1:]), is_dir)
    if len(parts) == 1:
        if is_dir:
            return top in ("arrays", "done")
        return top == "run.json" or top.startswith(".run.json.partial-")
    if top == "arrays":
        if len(parts) == 2:
            return is_dir
        if len(parts) == 3 and not is_dir:
            name = parts[2].removesuffix(".__lock")
            return name == ".zarray" or bool(_CHUNK.match(name))
        return False
    if top == "done" and len(parts) == 2 and not is_dir:
        return bool(re.fullmatch(r"\d+\.json|\.\d+\.json\.partial-.*", parts[1]))
    return False


def _spec(path: Path) -> dict:
    return {"driver": "zarr", "kvstore": {"driver": "file", "path": str(path)}}


def create_array(path: Path, shape, chunk, dtype) -> None:
    """Creates (or opens, if it exists with this layout) a zarr array of zeros-to-be."""
    import tensorstore as ts

    ts.open({**_spec(path), "metadata": {"shape": list(shape), "chunks": list(chunk),
                                         "dtype": np.dtype(dtype).str, "fill_value": 0,
                                         "compressor": None}},
            create=True, open=True).result()


def open_array(path: Path):
    """A tensorstore handle of an existing array (reads are lazy)."""
    import tensorstore as ts

    return ts.open(_spec(path), open=True).result()


def manifest_path(run: Path) -> Path:
    return Path(run) / "run.json"


def read_manifest(run: Path) -> dict:
    f = manifest_path(run)
    if not f.exists():
        raise FileNotFoundError(f"{run} is not a jaxinterp data-set run (no run.json)")
    m = json.loads(f.read_text())
    if m.get("format") != FORMAT:
        raise ValueError(f"{f} is not a {FORMAT} manifest")
    return m


def done_batches(run: Path) -> set[int]:
    d = Path(run) / "done"
    if not d.is_dir():
        return set()
    return {int(p.stem) for p in d.glob("*.json") if p.stem.isdigit()}


def read_markers(run: Path) -> list[dict]:
    d = Path(run) / "done"
    return [json.loads(p.read_text()) for p in sorted(d.glob("*.json")) if p.stem.isdigit()]


def staging_dir(run: Path) -> Path:
    """Where a `force` run that replaces another run in `run` is built (beside it)."""
    return run.with_name(f".{run.name}.replacing")


def create(target: Path, manifest: dict, arrays: dict) -> None:
    """Makes (or completes) a run directory: manifest first, so an interrupted creation is
    still recognisably ours and resumes; array creation opens existing ones."""
    (target / "done").mkdir(parents=True, exist_ok=True)
    if not manifest_path(target).exists():
        atomic_write(manifest_path(target), json.dumps(manifest, indent=1))
    for name, (shape, chunk, dtype) in arrays.items():
        create_array(target / "arrays" / name, shape, chunk, dtype)


def digest_of(path: Path) -> str | None:
    try:
        return read_manifest(path).get("digest")
    except (OSError, ValueError):
        return None


def prepare_dir(run: Path, manifest: dict, arrays: dict, force: bool) -> Path:
    """Decides where this run writes and prepares it (process 0, holding the lock); returns
    the directory: `run` (new, or the same run resumed), or `staging_dir(run)` when `force`
    replaces another run (the old one stays complete in place until the new one is).

    Everything is checked before anything is touched: an existing `run` that is not a
    data-set run, or that holds any file jaxinterp did not write (its `report/` included), is
    refused, with or without `force`."""
    if run.exists() and not run.is_dir():
        raise FileExistsError(f"--out {run} is a file, not a directory")
    staging = staging_dir(run)
    target = run
    if run.is_dir() and any(run.iterdir()):
        old = digest_of(run)
        if old is None:
            raise FileExistsError(f"{run} exists and is not a jaxinterp data-set run; refusing "
                                  "to write into it")
        if old != manifest["digest"]:
            if not force:
                raise FileExistsError(f"{run} holds another run (other files, model or "
                                      "settings); pass another --out, or --force to replace it")
            foreign = foreign_files(run, run_entry_is_ours)
            if foreign:
                raise FileExistsError(
                    f"{run} holds files jaxinterp did not write ({', '.join(foreign[:5])}); "
                    "--force replaces only what jaxinterp wrote: move them out, or pass another "
                    "--out (nothing was changed)")
            target = staging
    if target == staging and staging.exists():
        if digest_of(staging) != manifest["digest"]:  # an earlier, other replacement: ours?
            foreign = foreign_files(staging, run_entry_is_ours)
            if foreign:
                raise FileExistsError(f"{staging} holds files jaxinterp did not write "
                                      f"({', '.join(foreign[:5])}); refusing to reuse it")
            remove_ours(staging, run_entry_is_ours)
    if target == run and staging.exists():
        try:
            left = read_manifest(staging)
        except (OSError, ValueError):
            left = None
        if (left is None or left.get("complete")) and not foreign_files(staging,
                                                                       run_entry_is_ours):
            # the old run a killed replacement swapped out (being removed), or a finished
            # replacement that was never swapped in: ours, not an unfinished one to resume
            remove_ours(staging, run_entry_is_ours)
    create(target, manifest, arrays)
    return target


def locate(run: Path, digest: str) -> Path:
    """The directory process 0 prepared for the run of `digest` (other processes)."""
    for path in (run, staging_dir(run)):
        if digest_of(path) == digest:
            return path
    raise RuntimeError(f"processes disagree about the run in {run}: same command, data and "
                       "model on every process?")


def finish_run(outdir: Path, run: Path, extra: dict | None = None) -> Path:
    """Marks a finished run complete in its manifest; a replacement built in
    `staging_dir(run)` is then swapped in (atomically) and the old run removed, file by file,
    only what jaxinterp wrote (`run_entry_is_ours`)."""
    final = {**read_manifest(outdir), **(extra or {}), "complete": True}
    atomic_write(manifest_path(outdir), json.dumps(final, indent=1))
    if Path(outdir) != Path(run):
        replace_dir(Path(outdir), Path(run), ours=run_entry_is_ours)
    return Path(run)


class LazyArray:
    """One run array, read from disk only when sliced (`a[i]`, `a[10:20]`, `np.asarray(a)`).

    With `missing` (bool `[N]`), rows not computed read as NaN (floats) or -1 (integers)."""

    def __init__(self, handle, missing: np.ndarray | None = None):
        self._h = handle
        self._missing = missing if missing is not None and missing.any() else None

    @property
    def shape(self) -> tuple:
        return tuple(self._h.shape)

    @property
    def dtype(self):
        return np.dtype(self._h.dtype.numpy_dtype)

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, index) -> np.ndarray:
        if self._missing is None:
            return np.asarray(self._h[index].read().result())
        rows = _first_axis(index, len(self.shape))
        if rows is None:  # an index whose first axis is not simple: mask the whole, then index
            return self[:][index]
        a = np.array(self._h[index].read().result())
        fill = -1 if np.issubdtype(a.dtype, np.integer) else np.nan
        which = self._missing[rows]
        if np.ndim(which) == 0:
            if which:
                a[...] = fill
        elif which.any():
            a[which] = fill
        return a

    def __array__(self, dtype=None, copy=None):
        a = self[...]
        return a.astype(dtype) if dtype is not None else a

    def __repr__(self) -> str:
        return f"LazyArray(shape={self.shape}, dtype={self.dtype})"


def _first_axis(index, ndim: int):
    """The first-axis part of a numpy index (int, slice, int / bool array), or None."""
    first = index[0] if isinstance(index, tuple) and index else index
    if isinstance(index, tuple) and not index:
        first = slice(None)
    if first is Ellipsis:
        rest = index[1:] if isinstance(index, tuple) else ()
        if sum(i is not None and i is not Ellipsis for i in rest) >= ndim:
            return None
        first = slice(None)
    if first is None:
        return None
    if isinstance(first, (slice, int, np.integer)) or (
            isinstance(first, (list, np.ndarray)) and np.asarray(first).dtype != object):
        return first
    return None


class Run:
    """A data-set run read back: `.files`, `.labels`, `.predictions`, `.methods`, `run[name]`.

    `run[method]` (and `run["logits"]`, `run["target"]`, `run["<method>.deletion_auc"]`, …) is a
    `LazyArray` `[N, ...]` in the order of `.files`. Rows never computed (an interrupted run)
    read as missing: -1 in integer arrays (`predictions`), NaN in float ones; `.computed` says
    which rows are there and `.complete` whether all are.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.manifest = read_manifest(self.path)
        self._done = done_batches(self.path)
        self.complete = len(self._done) >= self.manifest["num_batches"]
        n, batch = len(self), self.manifest["batch_size"]
        #: bool [N]: rows of finished batches (the others read as missing)
        self.computed = np.ones(n, bool) if self.complete else np.zeros(n, bool)
        if not self.complete:
            for b in self._done:
                self.computed[b * batch:(b + 1) * batch] = True
        self._missing = None if self.complete else ~self.computed

    @property
    def missing_batches(self) -> list[int]:
        """Batches not computed."""
        return [] if self.complete else sorted(
            set(range(self.manifest["num_batches"])) - self._done)

    @property
    def num_missing(self) -> int:
        """Rows not computed."""
        return 0 if self.complete else int(self._missing.sum())

    @property
    def files(self) -> list[str]:
        files = self.manifest["files"]
        if files is None:  # shapes:N: names are implied
            return [f"shapes:{i}" for i in range(len(self))]
        return list(files)

    @property
    def labels(self) -> np.ndarray | None:
        labels = self.manifest.get("labels")
        if labels == "array":  # shapes:N: computed per batch, stored as an array
            return np.asarray(self["label"])
        return None if labels is None else np.asarray(labels)

    @property
    def methods(self) -> list[str]:
        return list(self.manifest["methods"])

    @property
    def classes(self) -> list[str]:
        return list(self.manifest["model"]["classes"])

    @property
    def arrays(self) -> list[str]:
        return sorted(p.name for p in (self.path / "arrays").iterdir() if p.is_dir())

    @property
    def predictions(self) -> np.ndarray:
        """Predicted class per image (-1 where the file could not be read)."""
        return np.asarray(self["prediction"])

    @property
    def failed(self) -> dict:
        """`{file: error}` of the files that could not be read."""
        out = {}
        for marker in read_markers(self.path):
            out.update(marker.get("failed", {}))
        return out

    def __getitem__(self, name: str) -> LazyArray:
        if name not in self.arrays:
            raise KeyError(f"{name!r} is not in this run; arrays: {', '.join(self.arrays)}")
        return LazyArray(open_array(self.path / "arrays" / name), None if name == "computed"
                         else self._missing)

    def __len__(self) -> int:
        if self.manifest.get("count") is not None:
            return int(self.manifest["count"])
        return len(self.manifest["files"])

    def __repr__(self) -> str:
        state = "complete" if self.complete else (
            f"incomplete: {self.num_missing} of {len(self)} images not computed")
        return f"Run({self.path}, {len(self)} images, methods {self.methods}, {state})"


def open_run(path: str | os.PathLike) -> Run:
    """Reads a data-set run directory written by `attribute_dataset` / `jaxinterp attribute
    --data` (arrays are read lazily)."""
    return Run(path)
