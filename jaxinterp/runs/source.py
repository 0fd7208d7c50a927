"""Where a data-set run's images come from: an image folder or generated `shapes`, read in
batches by worker threads, a few batches ahead of the compute (decoding overlaps the model)."""

from __future__ import annotations

import collections
import concurrent.futures as cf
import hashlib
import io
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import numpy as np

SUFFIXES = (".jpg", ".jpeg", ".png", ".webp")
_LEFTOVER = re.compile(r"^\..+\.(partial|old|replacing)(-.*)?$")


class ShapesNames(Sequence):
    """`shapes:0 … shapes:N-1`, made on demand (N may be 10⁸)."""

    def __init__(self, n: int):
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [f"shapes:{j}" for j in range(*i.indices(self.n))]
        i = int(i)
        if not -self.n <= i < self.n:
            raise IndexError(i)
        return f"shapes:{i % self.n}"

    def __eq__(self, other) -> bool:
        return isinstance(other, ShapesNames) and other.n == self.n

    def __hash__(self) -> int:
        return hash(("shapes", self.n))


def is_jaxinterp_output(path: Path) -> bool:
    """Whether the directory `path` is something jaxinterp wrote: a data-set run (or any run
    directory with a `run.json` marker), a report, or a temporary / moved-aside directory of
    one. Its files are results, never input data."""
    if _LEFTOVER.match(path.name) or (path / ".jaxinterp-report").is_file():
        return True
    marker = path / "run.json"
    if not marker.is_file():
        return False
    try:
        record = json.loads(marker.read_text())
    except (OSError, ValueError):
        return False
    return isinstance(record, dict) and (record.get("format") == "jaxinterp-run"
                                         or "entries" in record)


def list_images(root: Path) -> list[str]:
    """Image files under `root` (sorted relative paths), skipping jaxinterp's own outputs."""
    names = []
    for dirpath, dirs, files in os.walk(root):
        here = Path(dirpath)
        dirs[:] = sorted(d for d in dirs if not is_jaxinterp_output(here / d))
        names += [str((here / f).relative_to(root)) for f in files
                  if Path(f).suffix.lower() in SUFFIXES and (here / f).is_file()]
    return sorted(names)


@dataclass(frozen=True)
class Source:
    """The items of a run: names (relative paths, or `shapes:i`), labels, how to read them.

    Attributes:
      kind: "folder" or "shapes".
      root: the folder (kind "folder").
      names: one name per item, in run order (sorted paths; `ShapesNames` for shapes).
      labels: int labels of class subfolders, or None (`shapes` labels come with each batch
        from `read_batch`: computing them all up front would generate every image).
      classes: label names (the subfolder names), or None.
      seed: the `shapes` key.
    """

    kind: str
    root: str | None
    names: Sequence
    labels: tuple | None
    classes: tuple | None
    seed: int = 0

    def __len__(self) -> int:
        return len(self.names)


def open_source(data: str, *, seed: int = 0) -> Source:
    """An image folder (recursive; jpg/png/webp; one level of class subfolders gives labels) or
    `shapes:N` (the procedural data set, images 0 … N-1 of key `seed`; nothing is generated
    here). Directories jaxinterp wrote (runs, reports) are skipped: results are not data."""
    if isinstance(data, str) and data.startswith("shapes:"):
        try:
            n = int(data.split(":", 1)[1])
        except ValueError:
            n = 0
        if n <= 0:
            raise ValueError(f"shapes:N needs a positive count, got {data!r}")
        from jaxinterp.data import shapes_dataset

        return Source("shapes", None, ShapesNames(n), None, tuple(shapes_dataset.CLASSES), seed)
    root = Path(data)
    if not root.is_dir():
        raise FileNotFoundError(f"--data {data}: not a directory (or shapes:N)")
    for d in (root.resolve(), *root.resolve().parents):
        if is_jaxinterp_output(d):
            raise ValueError(f"--data {data} is inside {d}, a directory jaxinterp wrote (a run "
                             "or a report): its files are results, not data")
    names = list_images(root)
    if not names:
        raise ValueError(f"no images ({', '.join(SUFFIXES)}) under {root}")
    dirs = {Path(n).parts[0] if len(Path(n).parts) > 1 else None for n in names}
    if None in dirs or len(dirs) < 2:
        return Source("folder", str(root), tuple(names), None, None)
    classes = tuple(sorted(dirs))
    index = {c: i for i, c in enumerate(classes)}
    return Source("folder", str(root), tuple(names),
                  tuple(index[Path(n).parts[0]] for n in names), classes)


def file_state(path: str | os.PathLike) -> list:
    """`[size, mtime_ns]` of a file (`[-1, -1]` if it cannot be read)."""
    try:
        st = os.stat(path)
    except OSError:
        return [-1, -1]
    return [st.st_size, st.st_mtime_ns]


def file_digest(path: str | os.PathLike) -> str | None:
    """SHA-256 of a file's bytes (None if it cannot be read)."""
    h = hashlib.sha256()
    try:
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
    except OSError:
        return None
    return h.hexdigest()


def decode_many(root: str, names: list[str], size) -> tuple[np.ndarray, dict, list]:
    """Decodes files: uint8 `[n, H, W, 3]` (`load_image`'s values x 255, exactly: it reads
    every file as 8-bit RGB), `{position: error}`, and per file `[size, mtime_ns, sha256]` of
    the bytes decoded (read once: what was hashed is what was computed)."""
    from jaxinterp.images import load_image

    out = np.zeros((len(names), *size, 3), np.uint8)
    errors, states = {}, []
    for j, name in enumerate(names):
        path = os.path.join(root, name)
        state = file_state(path)
        try:
            with open(path, "rb") as f:
                data = f.read()
        except OSError as e:
            errors[j] = str(e)
            states.append([*state, None])
            continue
        states.append([len(data), state[1], hashlib.sha256(data).hexdigest()])
        try:
            buf = io.BytesIO(data)
            out[j] = np.round(load_image(buf, size) * 255)
        except (OSError, ValueError) as e:
            errors[j] = str(e).replace(str(buf), path)
    return out, errors, states


def read_batch(source: Source, indices, size, pool) -> tuple:
    """Images `[len(indices), H, W, 3]`, `{index: error}` for files that failed (their rows are
    zeros), the `shapes` masks (or None), the `shapes` labels (or None), and per file
    `[size, mtime_ns, sha256]` (folders; else None)."""
    if source.kind == "shapes":
        import jax

        from jaxinterp.data import shapes_dataset

        b = shapes_dataset.shapes(jax.random.key(source.seed), len(indices), start=int(indices[0]),
                                  size=size[0])
        return (np.asarray(b.images), {}, np.asarray(b.mask),
                np.asarray(b.labels, np.int32), None)
    parts = np.array_split(np.arange(len(indices)), min(len(indices), pool._max_workers))
    jobs = [(part, pool.submit(decode_many, source.root,
                               [source.names[indices[j]] for j in part], tuple(size)))
            for part in parts if len(part)]
    images = np.zeros((len(indices), *size, 3), np.uint8)
    errors, states = {}, [None] * len(indices)
    for part, job in jobs:
        pixels, errs, st = job.result()
        images[part] = pixels
        errors.update({int(indices[part[j]]): e for j, e in errs.items()})
        for j, s in zip(part, st):
            states[j] = s
    return images.astype(np.float32) / 255.0, errors, None, None, states


def prefetch(source: Source, batches: Iterable[np.ndarray], size, *, workers: int = 4,
             ahead: int = 2) -> Iterator[tuple]:
    """Yields `(indices, images, errors, masks, labels, states)` per batch (see `read_batch`),
    decoding `ahead` batches in advance
    on `workers` threads (Pillow releases the GIL while decoding). A pool of worker processes
    was measured slower here: VGG16 from 224² JPEGs kept the compute 60 % busy against 94 %
    with threads, on 2 cores."""
    pool = None if source.kind == "shapes" else cf.ThreadPoolExecutor(workers)
    try:
        with cf.ThreadPoolExecutor(1) as loader:
            queue = collections.deque()
            for idx in batches:
                queue.append((idx, loader.submit(read_batch, source, idx, size, pool)))
                if len(queue) > ahead:
                    idx0, fut = queue.popleft()
                    yield (idx0, *fut.result())
            while queue:
                idx0, fut = queue.popleft()
                yield (idx0, *fut.result())
    finally:
        if pool is not None:
            pool.shutdown(cancel_futures=True)
