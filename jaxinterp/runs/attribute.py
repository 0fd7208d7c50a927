"""`attribute_dataset`: attribution methods over a whole image folder (or `shapes:N`), streamed,
split over every local device, over several processes with `jax.distributed`, resumable."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from jaxinterp import evaluation
from jaxinterp.attribution import registry
from jaxinterp.runs import store
from jaxinterp.runs.source import Source, open_source, prefetch

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
           "target": ((n,), (batch,), "int32"), "score": ((n,), (batch,), "float32")}
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


def _prepare_dir(run: Path, manifest: dict, arrays: dict, force: bool) -> None:
    """Creates the run directory (process 0), or checks that an existing one is this run."""
    if run.exists():
        try:
            old = store.read_manifest(run)
        except (FileNotFoundError, ValueError, json.JSONDecodeError):
            raise FileExistsError(f"{run} exists and is not a jaxinterp data-set run; refusing "
                                  "to write into it") from None
        if old.get("digest") == manifest["digest"]:
            return  # resume
        if not force:
            raise FileExistsError(f"{run} holds another run (other files, model or settings); "
                                  "pass another --out, or --force to replace it")
        for entry in ("arrays", "done", "run.json", "report"):
            p = run / entry
            if p.is_dir():
                shutil.rmtree(p)
            elif p.exists():
                p.unlink()
        left = [p.name for p in run.iterdir() if not p.name.startswith(".")]
        if left:
            raise FileExistsError(f"{run} also holds files jaxinterp did not write ({left[:5]}); "
                                  "not replacing it")
    (run / "done").mkdir(parents=True, exist_ok=True)
    for name, (shape, chunk, dtype) in arrays.items():
        store.create_array(run / "arrays" / name, shape, chunk, dtype)
    store.atomic_write(store.manifest_path(run), json.dumps(manifest, indent=1))


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
    Running the same call again after a crash skips finished batches.

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
      force: replace a different earlier run in `out` (only a jaxinterp run directory).
      progress: wraps the batch iterator, `progress(iterable, total=, unit=)` (tqdm-like).
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
    labels = model_labels(source, m)
    if target == "label" and labels is None:
        raise ValueError("target='label' needs labels: class subfolders named as the model's "
                         f"classes (or their indices), or shapes:N; got folders "
                         f"{list(source.classes or [])[:5]}")
    if isinstance(target, int) and not 0 <= target < m.num_classes:
        raise ValueError(f"target {target} out of range: {m.arch} has {m.num_classes} classes")
    local = jax.local_devices()
    batch = -(-check_count(batch_size, "batch_size", 1) // len(local)) * len(local)
    n = len(source)
    num_batches = -(-n // batch)
    size = tuple(m.input_size)
    masks = source.kind == "shapes"
    arrays = _arrays(m, methods, n, size, batch, dtype, metrics, masks)
    config = {"files": list(source.names), "methods": methods, "target": target,
              "batch_size": batch, "dtype": dtype, "metrics": list(metrics),
              "metric_steps": metric_steps, "size": list(size), "seed": seed,
              "options": {k: {a: repr(b) for a, b in v.items()} for k, v in options.items()},
              "key": repr(np.asarray(jax.random.key_data(as_key(key))).tolist()),
              "model": {"arch": m.arch, "params": _params_digest(m)}}
    manifest = {"format": store.FORMAT, "version": store.VERSION, "digest": _digest(config),
                "files": list(source.names),
                "labels": None if labels is None else labels.tolist(),
                "folders": None if source.classes is None else list(source.classes),
                "root": source.root, "kind": source.kind, "seed": seed, "methods": methods,
                "target": target,
                "batch_size": batch, "num_batches": num_batches, "dtype": dtype,
                "metrics": list(metrics), "metric_steps": metric_steps, "size": list(size),
                "model": {"arch": m.arch, "classes": m.classes}, "processes": jax.process_count(),
                "complete": False}
    run = Path(os.path.abspath(out))
    if jax.process_index() == 0:
        _prepare_dir(run, manifest, arrays, force)
    _barrier("jaxinterp-run-created")
    if store.read_manifest(run)["digest"] != manifest["digest"]:
        raise RuntimeError(f"processes disagree about the run in {run}: same command, data and "
                           "model on every process?")
    handles = {name: store.open_array(run / "arrays" / name) for name in arrays}
    done = store.done_batches(run)
    mine = [b for b in range(num_batches) if b % jax.process_count() == jax.process_index()]
    todo = [b for b in mine if b not in done]
    mesh = Mesh(np.array(local), ("batch",))
    sharding = NamedSharding(mesh, PartitionSpec("batch"))
    base_key = as_key(key)
    index_batches = [np.arange(b * batch, min(n, (b + 1) * batch)) for b in todo]
    failed: dict = {}
    stream = prefetch(source, index_batches, size, workers=workers)
    if progress is not None:
        stream = progress(stream, total=len(todo))
    waited, t_wait = 0.0, time.time()
    for j, (idx, images, errors, mask) in enumerate(stream):
        b = todo[j]
        t_batch = time.time()
        waited += t_batch - t_wait
        valid = len(idx)
        pad = batch - valid
        x = _pad(images, pad)
        xs = jax.device_put(jnp.asarray(x), sharding)
        logits = np.asarray(_logits(m, xs))
        pred = logits.argmax(-1).astype(np.int32)
        if target == "predicted":
            t = pred
        elif target == "label":
            t = _pad(labels[idx], pad)
        else:
            t = np.full(batch, target, np.int32)
        t = np.asarray(t, np.int32)
        ts = jax.device_put(t, sharding)
        bad = np.isin(idx, list(errors))
        score = logits[np.arange(batch), t]
        score[:valid][bad] = np.nan
        writes = {"logits": logits, "prediction": np.where(np.r_[bad, [False] * pad],
                                                                        -1, pred),
                  "target": t, "score": score}
        all_idx = _pad(idx, pad)
        keys = _keys(base_key, jax.device_put(all_idx.astype(np.int32), sharding))
        for name in methods:
            method = registry.get(name)
            attr = method(m, xs, ts, key=keys, **options.get(name, {}))
            a = np.array(attr, np.float32)
            a[:valid][bad] = np.nan
            writes[name] = a.astype(dtype)
            if metrics:
                curves = evaluation.deletion_insertion(m, xs, ts, attr, steps=metric_steps)
                for metric in metrics:
                    writes[f"{name}.{metric}_auc"] = np.where(
                        np.r_[bad, [False] * pad], np.nan, curves[f"{metric}_auc"])
            if masks:
                mk = _pad(mask, pad)
                writes[f"{name}.pointing"] = evaluation.pointing_game(a, mk).astype(np.float32)
                writes[f"{name}.mass"] = evaluation.mass_inside(a, mk).astype(np.float32)
        lo, hi = int(idx[0]), int(idx[0]) + valid
        futures = [handles[name][lo:hi].write(np.asarray(v)[:valid]) for name, v in writes.items()]
        names = {source.names[i]: errors[i] for i in errors}
        failed.update(names)
        # written (tensorstore compresses the chunks on its threads) and marked before the next
        # batch computes: a crash loses at most the batch in flight
        _finish(futures, run / "done" / f"{b}.json", {
            "batch": b, "process": jax.process_index(), "images": valid, "failed": names,
            "seconds": time.time() - t_batch})
        t_wait = time.time()
    _barrier("jaxinterp-run-finished")
    finished = store.done_batches(run)
    complete = len(finished) == num_batches
    summary = {"images": n, "batches": num_batches, "computed": len(todo),
               "skipped": len(mine) - len(todo), "failed": failed, "complete": complete,
               "seconds": time.time() - t0, "input_wait_s": waited,
               "process": jax.process_index(),
               "processes": jax.process_count()}
    summary["images_per_s"] = sum(len(i) for i in index_batches) / max(summary["seconds"], 1e-9)
    if complete:  # every process reports every failure of the run
        summary["failed"] = {k: v for mk in store.read_markers(run)
                             for k, v in mk.get("failed", {}).items()}
    if jax.process_index() == 0 and complete:
        final = {**store.read_manifest(run), "complete": True, "failed": summary["failed"]}
        store.atomic_write(store.manifest_path(run), json.dumps(final, indent=1))
    return summary


def _pad(a: np.ndarray, pad: int) -> np.ndarray:
    """`a` with its last row repeated `pad` times (a fixed batch shape: one compilation)."""
    return np.concatenate([a, np.repeat(a[-1:], pad, 0)]) if pad else a


def _finish(futures, marker: Path, record: dict) -> None:
    """Waits for a batch's chunk writes, then writes its marker (atomically)."""
    for f in futures:
        f.result()
    store.atomic_write(marker, json.dumps(record))


def model_labels(source: Source, m) -> np.ndarray | None:
    """The source's labels as the model's class indices: class folders named as the model's
    classes (or as indices); None when the names do not match (they are kept as `folders`)."""
    if source.labels is None:
        return None
    if source.kind == "shapes":
        return np.asarray(source.labels, np.int32)
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
    return m(x, check=False)[0]
