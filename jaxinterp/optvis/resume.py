"""Long optimization runs: compiled chunks, progress between them, orbax checkpoints, resume.

A checkpoint directory holds `jaxinterp-run.json` (written last, atomically: which step is
complete, and a fingerprint of the run's inputs and options) and one orbax checkpoint
`step_<n>/` of the run's state (the parameters and the optimizer state). A crash or Ctrl-C
leaves the previous complete step in place; the same call again resumes from it. A directory
that holds anything else, or another run's checkpoint, is refused, never overwritten.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
from pathlib import Path
from typing import Any, Callable

import jax
import numpy as np

MARKER = "jaxinterp-run.json"
_STEP = re.compile(r"step_\d+")


def fingerprint(*parts: Any) -> str:
    """A digest of arrays and plain values: a checkpoint resumes only the run it was made by."""
    h = hashlib.sha256()
    for part in parts:
        for leaf in jax.tree_util.tree_leaves(part):
            if isinstance(leaf, (str, int, float, bool)) or leaf is None:
                h.update(repr(leaf).encode())
            else:
                a = np.asarray(leaf)
                h.update(f"{a.dtype}{a.shape}".encode())
                h.update(np.ascontiguousarray(a).tobytes())
        h.update(b"|")
    return h.hexdigest()


def _read_marker(d: Path) -> dict | None:
    try:
        return json.loads((d / MARKER).read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as e:
        raise ValueError(f"checkpoint_dir {d}: unreadable {MARKER} ({e})") from None


def _open(d: Path, digest: str) -> dict | None:
    """The marker of a resumable run in `d` (None: a fresh run); refuses foreign directories."""
    if not d.exists():
        return None
    if not d.is_dir():
        raise ValueError(f"checkpoint_dir {d} is a file; give a directory")
    marker = _read_marker(d)
    if marker is None:
        if any(d.iterdir()):
            raise ValueError(f"checkpoint_dir {d} is not empty and holds no jaxinterp run "
                             f"({MARKER}); give a new or empty directory")
        return None
    if marker.get("fingerprint") != digest:
        raise ValueError(f"checkpoint_dir {d} holds a run with other inputs or options; give "
                         f"another directory (or delete it to start over)")
    return marker


def _write_marker(d: Path, marker: dict) -> None:
    tmp = d / f".{MARKER}.partial-{os.getpid()}"
    tmp.write_text(json.dumps(marker, indent=1))
    os.replace(tmp, d / MARKER)


def _clean(d: Path, keep: int | None) -> None:
    """Removes our step directories other than `step_<keep>` (and partial ones of a crashed save)."""
    for p in d.iterdir():
        if p.is_dir() and _STEP.match(p.name) and p.name != f"step_{keep}":
            shutil.rmtree(p, ignore_errors=True)


def run_in_chunks(chunk: Callable[[Any, int, int], Any], carry: Any, steps: int, *, every: int,
                  checkpoint_dir: str | os.PathLike | None = None, digest: str = "",
                  progress: Callable[[int, int, Any], None] | None = None) -> Any:
    """Runs `carry = chunk(carry, start, n)` until `steps` steps are done, `every` at a time.

    Args:
      chunk: advances the run by `n` steps from step `start` (one compiled call).
      carry: the run's state at step 0 (a pytree of arrays: parameters, optimizer state).
      steps: total steps.
      every: steps per chunk (and per checkpoint).
      checkpoint_dir: save the carry after every chunk there and resume from the last saved
        step; None: no files.
      digest: the run's `fingerprint` (a checkpoint of another run is refused).
      progress: called as `progress(done, steps, carry)` after each chunk.
    Returns:
      The carry after `steps` steps.
    """
    import orbax.checkpoint as ocp

    done, d = 0, None
    if checkpoint_dir is not None:
        d = Path(os.path.abspath(checkpoint_dir))
        marker = _open(d, digest)
        if marker is not None:
            done = int(marker["step"])
            if done > steps:
                raise ValueError(f"checkpoint_dir {d} is at step {done}, past steps={steps}")
            abstract = jax.tree_util.tree_map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype),
                                              carry)
            with ocp.StandardCheckpointer() as ckptr:
                carry = ckptr.restore(d / f"step_{done}", abstract)
            _clean(d, done)
        if progress is not None and done:
            progress(done, steps, carry)
    while done < steps:
        n = min(every, steps - done)
        carry = chunk(carry, done, n)
        done += n
        if d is not None:
            d.mkdir(parents=True, exist_ok=True)
            with ocp.StandardCheckpointer() as ckptr:
                ckptr.save(d / f"step_{done}", carry)
            _write_marker(d, {"format": 1, "step": done, "steps": steps, "fingerprint": digest})
            _clean(d, done)
        if progress is not None:
            progress(done, steps, carry)
    return carry
