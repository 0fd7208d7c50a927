"""A run directory: chunked zarr arrays (through tensorstore), a manifest, and one marker per
finished batch.

    RUN/run.json             manifest: files, labels, methods, model, settings; "complete" at the end
    RUN/arrays/<name>/       zarr v2 arrays, one chunk per batch along the first axis:
                             <method> [N, H, W(, 3)], logits [N, K], target [N], ...
    RUN/done/<batch>.json    written (atomically) after every array of the batch is written

A batch without its marker is recomputed when the same command runs again; its chunks are then
simply overwritten. So a crash (kill -9 included) loses at most the batch in flight, per process.
Other tools read the arrays directly: `zarr.open(RUN/arrays/saliency)`, tensorstore, or
`ji.open_run(RUN)`.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from jaxinterp.outputs import write_file

FORMAT = "jaxinterp-run"
VERSION = 1


def atomic_write(path: Path, text: str) -> None:
    """Writes `text` to `path` under a temporary name and renames it into place."""
    write_file(path, lambda tmp: tmp.write_text(text), force=True)


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


class LazyArray:
    """One run array, read from disk only when sliced (`a[i]`, `a[10:20]`, `np.asarray(a)`)."""

    def __init__(self, handle):
        self._h = handle

    @property
    def shape(self) -> tuple:
        return tuple(self._h.shape)

    @property
    def dtype(self):
        return np.dtype(self._h.dtype.numpy_dtype)

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, index) -> np.ndarray:
        return np.asarray(self._h[index].read().result())

    def __array__(self, dtype=None, copy=None):
        a = self[...]
        return a.astype(dtype) if dtype is not None else a

    def __repr__(self) -> str:
        return f"LazyArray(shape={self.shape}, dtype={self.dtype})"


class Run:
    """A data-set run read back: `.files`, `.labels`, `.predictions`, `.methods`, `run[name]`.

    `run[method]` (and `run["logits"]`, `run["target"]`, `run["<method>.deletion_auc"]`, …) is a
    `LazyArray` `[N, ...]` in the order of `.files`.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.manifest = read_manifest(self.path)
        done = done_batches(self.path)
        self.complete = len(done) == self.manifest["num_batches"]
        self.missing_batches = sorted(set(range(self.manifest["num_batches"])) - done)

    @property
    def files(self) -> list[str]:
        return list(self.manifest["files"])

    @property
    def labels(self) -> np.ndarray | None:
        labels = self.manifest.get("labels")
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
        return LazyArray(open_array(self.path / "arrays" / name))

    def __len__(self) -> int:
        return len(self.manifest["files"])

    def __repr__(self) -> str:
        state = "complete" if self.complete else f"{len(self.missing_batches)} batches missing"
        return f"Run({self.path}, {len(self)} images, methods {self.methods}, {state})"


def open_run(path: str | os.PathLike) -> Run:
    """Reads a data-set run directory written by `attribute_dataset` / `jaxinterp attribute
    --data` (arrays are read lazily)."""
    return Run(path)
