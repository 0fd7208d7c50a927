"""`attribute_dataset`: attribution methods over a whole image folder (or `shapes:N`), streamed,
split over every local device, over several processes with `jax.distributed`, resumable."""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from jaxinterp import evaluation, outputs
from jaxinterp.attribution import registry
from jaxinterp.runs import store
from jaxinterp.runs.source import Source, file_digest, file_state, open_source, prefetch

DTYPES = ("float32", "float16")


def initialize_distributed(coordinator: str | None = None, num_processes: int | None = None,
                           process_id: int | None = None) -> None:
    """`jax.distributed.initialize` for a multi-process run, CPU collectives included.

    Call before any other JAX work. Arguments left None come from the environment as JAX reads
    it (TPU pods, SLURM, Open MPI, or `JAX_COORDINATOR_ADDRESS`, `JAX_NUM_PROCESSES`,
    `JAX_PROCESS_ID`).
    """
    env = os.environ
    coordinator = coordinator or env.get("JAX_COORDINATOR_ADDRESS")
    if num_processes is None and env.get("JAX_NUM_PROCESSES"):
        num_processes = int(env["JAX_NUM_PROCESSES"])
    if process_id is None and env.get("JAX_PROCESS_ID"):
        process_id = int(env["JAX_PROCESS_ID"])
    if jax.config.jax_platforms in (None, "", "cpu") or "cpu" in str(jax.config.jax_platforms):
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(coordinator, num_processes, process_id)


def _barrier(name: str) -> None:
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(name)


def _target_spec(target) -> str | int:
    if target in ("predicted", "label"):
        return target
    try:
        return int(target)
    except (TypeError, ValueError):
        raise ValueError(f"target must be 'predicted', 'label' or a class index, got "
                         f"{target!r}") from None


def _digest(config: dict) -> str:
    return hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()[:16]


def _params_digest(m) -> str:
    h = hashlib.sha256()
    for leaf in jax.tree_util.tree_leaves(m.variables):  # shapes, first values, sums
        a = np.asarray(leaf)
        h.update(str(a.shape).encode())
        h.update(a.ravel()[:1024].tobytes())
        h.update(np.float64(a.sum(dtype=np.float64)).tobytes())
    return h.hexdigest()[:16]


def _arrays(m, methods, n, size, batch, dtype, metrics, masks) -> dict:
    """name -> (shape, chunk, dtype) of every array of a run."""
    h, w = size
    k = m.num_classes
    out = {"logits": ((n, k), (batch, k), "float32"), "prediction": ((n,), (batch,), "int32"),
           "target": ((n,), (batch,), "int32"), "score": ((n,), (batch,), "float32"),
           "computed": ((n,), (batch,), "uint8")}
    if masks:  # shapes: labels come with each batch
        out["label"] = ((n,), (batch,), "int32")
    for name in methods:
        pixels = registry.get(name).output == "pixels"
        shape = (n, h, w, 3) if pixels else (n, h, w)
        out[name] = (shape, (batch, *shape[1:]), dtype)
        for metric in metrics:
            out[f"{name}.{metric}_auc"] = ((n,), (batch,), "float32")
        if masks:
            out[f"{name}.pointing"] = ((n,), (batch,), "float32")
            out[f"{name}.mass"] = ((n,), (batch,), "float32")
    return out


def _inside(a: Path, b: Path) -> bool:
    """Whether `a` is `b` or below it (resolved paths)."""
    a, b = a.resolve(), b.resolve()
    return a == b or b in a.parents


def _changed_batches(target: Path, root: str, batches) -> set[int]:
    """Finished batches (among `batches`) whose input files changed since they were computed:
    size or mtime differ and the SHA-256 too (a file only touched is re-recorded)."""
    changed = set()
    for b in batches:
        marker = target / "done" / f"{b}.json"
        try:
            record = json.loads(marker.read_text())
        except (OSError, ValueError):
            continue
        inputs = record.get("inputs")
        if not inputs:
            continue  # a run of an earlier version: names only
        touched = False
        for name, (size, mtime, digest) in inputs.items():
            path = os.path.join(root, name)
            if file_state(path) == [size, mtime]:
                continue
            if file_digest(path) != digest:
                changed.add(b)
                break
            inputs[name] = [*file_state(path), digest]
            touched = True
        if touched and b not in changed:
            store.atomic_write(marker, json.dumps(record))
    return changed


def attribute_dataset(m, data: str | Source, methods: Sequence[str] = ("saliency",), out: str |
                      os.PathLike = "jaxinterp-run", *, target: Any = "predicted",
                      batch_size: int = 32, dtype: str = "float32",
                      metrics: Sequence[str] = evaluation.CURVES, metric_steps: int = 16,
                      options: dict | None = None, key: Any = 0, seed: int = 0,
                      workers: int = 4, force: bool = False,
                      progress: Callable | None = None) -> dict:
    """Runs attribution methods over a data set into a resumable run directory.

    Images are decoded and resized on worker threads, `ahead` batches before the compute; each
    batch is split over every local device (a data-parallel mesh); with several processes
    (`initialize_distributed`), process `p` of `P` takes batches `p, p + P, …` and writes its own
    chunks. Every batch has the same shape (the last is padded), so each method compiles once.
    Running the same call again after a crash skips finished batches, except those whose input
    files changed since (size or mtime differ and so does the SHA-256 recorded in the batch's
    marker): they are recomputed.

    The output directory is locked while the run writes (`.OUT.lock` beside it, holding the
    PID; `outputs.DirLock`): a second run to the same `out` raises `outputs.LockedError` naming
    the holder; a dead holder's lock is taken over. `out` may not be inside the data folder
    (nor the data inside `out`), and folders jaxinterp wrote are never read as data.

    Args:
      m: the model (its `input_size` is the size images are resized to).
      data: an image folder (recursive jpg/png/webp; class subfolders give labels) or
        `shapes:N`; or a `Source`.
      methods: registered attribution methods (`ji.attribution.METHODS`).
      out: the run directory.
      target: "predicted", "label" (class subfolders / shapes classes) or a class index.
      batch_size: images per batch (rounded up to a multiple of the local device count); also
        the chunk size of the arrays.
      dtype: "float32" or "float16" storage of attributions.
      metrics: faithfulness curves to summarize per method (`deletion`, `insertion`: their AUC
        per image); with `shapes`, the pointing game and mass in mask are stored too.
      metric_steps: steps of the deletion / insertion curves.
      options: per-method keyword options, e.g. `{"smooth_grad": {"samples": 16}}`.
      key: PRNG key or seed of the randomized methods; image `i` uses `fold_in(key, i)`, so
        results do not depend on batching, devices or processes.
      seed: the `shapes` key.
      workers: image-decoding threads (folders).
      force: replace a different earlier run in `out`: only a jaxinterp run directory holding
        nothing jaxinterp did not write (its `report/` included), else refused before anything
        changes. The new run is built beside it (`.OUT.replacing`, resumed by the same command)
        and swapped in atomically once complete; until then `out` keeps the old run.
      progress: `progress(iterable, total=)` (tqdm-like), called once with an iterable of
        the images to compute (`total` of them, padding not counted); the run advances it by
        each batch's real image count as batches finish. `close()` is called at the end if
        it has one.
    Returns:
      A summary: images, batches computed / skipped, failed files, seconds, images/s, and
      `input_wait_s`, the time the compute waited for decoded images.
    """
    from jaxinterp.checks import as_key, check_count

    t0 = time.time()
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {DTYPES}, got {dtype!r}")
    methods = list(dict.fromkeys(methods))
    for name in methods:
        why = registry.get(name).supports(m)
        if why:
            raise ValueError(why)
    bad = [c for c in metrics if c not in evaluation.CURVES]
    if bad:
        raise ValueError(f"unknown metrics {bad}; valid: {', '.join(evaluation.CURVES)}")
    options = options or {}
    source = data if isinstance(data, Source) else open_source(str(data), seed=seed)
    target = _target_spec(target)
    shapes = source.kind == "shapes"
    labels = model_labels(source, m)
    if target == "label" and labels is None and not shapes:
        raise ValueError("target='label' needs labels: class subfolders named as the model's "
                         f"classes (or their indices), or shapes:N; got folders "
                         f"{list(source.classes or [])[:5]}")
    if isinstance(target, int) and not 0 <= target < m.num_classes:
        raise ValueError(f"target {target} out of range: {m.arch} has {m.num_classes} classes")
    run = Path(os.path.abspath(out))
    if source.kind == "folder" and _inside(run, Path(source.root)):
        raise ValueError(f"--out {run} is inside --data {source.root}: the run's files would be "
                         "read as data by the next run; write it elsewhere")
    if source.kind == "folder" and _inside(Path(source.root), run):
        raise ValueError(f"--data {source.root} is inside --out {run}; write the run elsewhere")
    local = jax.local_devices()
    batch = -(-check_count(batch_size, "batch_size", 1) // len(local)) * len(local)
    n = len(source)
    num_batches = -(-n // batch)
    size = tuple(m.input_size)
    arrays = _arrays(m, methods, n, size, batch, dtype, metrics, shapes)
    files = {"shapes": n} if shapes else list(source.names)
    config = {"files": files, "methods": methods, "target": target,
              "batch_size": batch, "dtype": dtype, "metrics": list(metrics),
              "metric_steps": metric_steps, "size": list(size), "seed": seed,
              "options": {k: {a: repr(b) for a, b in v.items()} for k, v in options.items()},
              "key": repr(np.asarray(jax.random.key_data(as_key(key))).tolist()),
              "model": {"arch": m.arch, "params": _params_digest(m)}}
    manifest = {"format": store.FORMAT, "version": store.VERSION, "digest": _digest(config),
                "files": None if shapes else list(source.names), "count": n,
                "labels": "array" if shapes else None if labels is None else labels.tolist(),
                "folders": None if source.classes is None else list(source.classes),
                "root": source.root, "kind": source.kind, "seed": seed, "methods": methods,
                "target": target,
                "batch_size": batch, "num_batches": num_batches, "dtype": dtype,
                "metrics": list(metrics), "metric_steps": metric_steps, "size": list(size),
                "model": {"arch": m.arch, "classes": m.classes}, "processes": jax.process_count(),
                "complete": False}
    lock = outputs.DirLock(run) if jax.process_index() == 0 else None
    ticks = None
    try:
        if lock is not None:
            lock.acquire()
            outdir = store.prepare_dir(run, manifest, arrays, force)
        _barrier("jaxinterp-run-created")
        if lock is None:
            outdir = store.locate(run, manifest["digest"])
        P, me = jax.process_count(), jax.process_index()
        mine = range(me, num_batches, P)
        done = {b for b in store.done_batches(outdir) if b % P == me and b < num_batches}
        if source.kind == "folder" and done:
            for b in _changed_batches(outdir, source.root, sorted(done)):
                (outdir / "done" / f"{b}.json").unlink(missing_ok=True)  # recomputed below
                done.discard(b)

        def rows(b: int) -> int:
            return min(n, (b + 1) * batch) - b * batch

        todo_batches = len(mine) - len(done)
        todo_images = (len(mine) * batch - (batch - rows(num_batches - 1)
                                            if (num_batches - 1) in mine else 0)
                       - sum(rows(b) for b in done))
        handles = {name: store.open_array(outdir / "arrays" / name) for name in arrays}
        mesh = Mesh(np.array(local), ("batch",))
        sharding = NamedSharding(mesh, PartitionSpec("batch"))
        base_key = as_key(key)
        index_batches = (np.arange(b * batch, min(n, (b + 1) * batch)) for b in mine
                         if b not in done)
        failed: dict = {}
        stream = prefetch(source, index_batches, size, workers=workers)
        if progress is not None:  # counts real images, not padded rows
            ticks = progress(range(todo_images), total=todo_images)
            tick = iter(ticks)
        waited, t_wait = 0.0, time.time()
        for idx, images, errors, mask, batch_labels, states in stream:
            b = int(idx[0]) // batch
            t_batch = time.time()
            waited += t_batch - t_wait
            valid = len(idx)
            pad = batch - valid
            x = _pad(images, pad)
            xs = jax.device_put(jnp.asarray(x), sharding)
            # everything of the batch is dispatched before anything is brought to the host:
            # the device runs the methods back to back (the predicted target stays on it)
            logits_dev, pred_dev = _logits(m, xs)
            if target == "predicted":
                ts = pred_dev
            else:
                t = _pad(batch_labels if shapes else labels[idx], pad) if target == "label" \
                    else np.full(batch, target, np.int32)
                ts = jax.device_put(np.asarray(t, np.int32), sharding)
            all_idx = _pad(idx, pad)
            keys = _keys(base_key, jax.device_put(all_idx.astype(np.int32), sharding))
            attrs, curves = {}, {}
            for name in methods:
                attrs[name] = registry.get(name)(m, xs, ts, key=keys, **options.get(name, {}))
                if metrics:
                    curves[name] = evaluation.deletion_insertion(m, xs, ts, attrs[name],
                                                                 steps=metric_steps)
            logits, pred, t = np.asarray(logits_dev), np.asarray(pred_dev), np.asarray(ts)
            bad = np.isin(idx, list(errors))
            score = logits[np.arange(batch), t]
            score[:valid][bad] = np.nan
            writes = {"logits": logits, "prediction": np.where(np.r_[bad, [False] * pad],
                                                                            -1, pred),
                      "target": t, "score": score}
            if shapes:
                writes["label"] = batch_labels
            for name in methods:
                a = np.array(attrs[name], np.float32)
                a[:valid][bad] = np.nan
                writes[name] = a.astype(dtype)
                if metrics:
                    for metric in metrics:
                        writes[f"{name}.{metric}_auc"] = np.where(
                            np.r_[bad, [False] * pad], np.nan, curves[name][f"{metric}_auc"])
                if mask is not None:
                    mk = _pad(mask, pad)
                    writes[f"{name}.pointing"] = evaluation.pointing_game(a, mk).astype(
                        np.float32)
                    writes[f"{name}.mass"] = evaluation.mass_inside(a, mk).astype(np.float32)
            lo, hi = int(idx[0]), int(idx[0]) + valid
            futures = [handles[name][lo:hi].write(np.asarray(v)[:valid])
                       for name, v in writes.items()]
            names = {source.names[i]: errors[i] for i in errors}
            failed.update(names)
            record = {"batch": b, "process": jax.process_index(), "images": valid,
                      "failed": names}
            if states is not None:
                record["inputs"] = {source.names[i]: st for i, st in zip(idx, states)}
            # written (tensorstore compresses the chunks on its threads), then the rows are
            # marked computed, then the batch: a crash loses at most the batch in flight
            _finish(futures, handles["computed"][lo:hi], outdir / "done" / f"{b}.json",
                    {**record, "seconds": time.time() - t_batch})
            if ticks is not None:
                for _ in itertools.islice(tick, valid):
                    pass
            t_wait = time.time()
        _barrier("jaxinterp-run-finished")
        finished = store.done_batches(outdir)
        complete = len(finished) == num_batches
        summary = {"images": n, "batches": num_batches, "computed": todo_batches,
                   "skipped": len(mine) - todo_batches, "failed": failed,
                   "complete": complete, "seconds": time.time() - t0, "input_wait_s": waited,
                   "process": jax.process_index(), "processes": jax.process_count()}
        summary["images_per_s"] = todo_images / max(summary["seconds"], 1e-9)
        if complete:  # every process reports every failure of the run
            summary["failed"] = {k: v for mk in store.read_markers(outdir)
                                 for k, v in mk.get("failed", {}).items()}
        if lock is not None and complete:
            store.finish_run(outdir, run, {"failed": summary["failed"]})
        return summary
    finally:
        if ticks is not None and hasattr(ticks, "close"):
            ticks.close()
        if lock is not None:
            lock.release()


def _pad(a: np.ndarray, pad: int) -> np.ndarray:
    """`a` with its last row repeated `pad` times (a fixed batch shape: one compilation)."""
    return np.concatenate([a, np.repeat(a[-1:], pad, 0)]) if pad else a


def _finish(futures, computed, marker: Path, record: dict) -> None:
    """Waits for a batch's chunk writes, marks its rows computed, then writes its marker
    (atomically)."""
    for f in futures:
        f.result()
    computed.write(np.ones(computed.shape, np.uint8)).result()
    store.atomic_write(marker, json.dumps(record))


def model_labels(source: Source, m) -> np.ndarray | None:
    """The source's labels as the model's class indices: class folders named as the model's
    classes (or as indices); None when the names do not match (they are kept as `folders`)."""
    if source.labels is None:  # also shapes: labels come with each batch
        return None
    names = list(source.classes)
    if all(c in m.classes for c in names):
        index = [m.classes.index(c) for c in names]
    elif all(c.isdigit() and int(c) < m.num_classes for c in names):
        index = [int(c) for c in names]
    else:
        return None
    return np.asarray(index, np.int32)[np.asarray(source.labels)]


@jax.jit
def _keys(key, indices):
    return jax.vmap(lambda i: jax.random.fold_in(key, i))(indices)


def _logits(m, x):
    return _logits_jit(m, x)


@jax.jit
def _logits_jit(m, x):
    logits = m(x, check=False)[0]
    return logits, logits.argmax(-1).astype(jnp.int32)
