"""The `cli` section of scripts/bench.py: whole `jaxinterp` processes, first and second run.

Each command runs three times in fresh processes: with the persistent compilation cache off
(`JAXINTERP_CACHE=off`, the same as `--no-cache`), with an empty cache directory (the first
run: everything compiled, entries written), and again with that directory (the second run:
programs loaded from the cache). Wall time of the whole process, interpreter start and
imports included, median of `reps` rounds (a fresh cache directory per round)."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time

import numpy as np

COMMANDS = {
    "predict --samples 4": ["predict", "--samples", "4"],
    "attribute --samples 4 (saliency)": ["attribute", "--samples", "4", "--method", "saliency",
                                         "--no-figures"],
    "attribute --samples 4 (grad_cam, integrated_gradients)": [
        "attribute", "--samples", "4", "--method", "grad_cam,integrated_gradients",
        "--no-figures"],
}


def _run(args: list[str], cache: str | None, out: str | None) -> float:
    env = dict(os.environ, JAXINTERP_CACHE=cache or "off")
    cmd = [sys.executable, "-m", "jaxinterp.cli", *args] + (["--out", out] if out else [])
    t = time.perf_counter()
    subprocess.run(cmd, check=True, env=env, capture_output=True)
    return time.perf_counter() - t


def bench_cli(setup, quick) -> list[dict]:
    """Rows: per command the no-cache, first (cold cache) and second (warm cache) wall times."""
    reps = 1 if quick else 3
    rows = []
    t = time.perf_counter()
    subprocess.run([sys.executable, "-c", "import jaxinterp.cli, jax; jax.numpy.zeros(1)"],
                   check=True)
    imports = time.perf_counter() - t  # the floor: interpreter, imports, a device
    for name, args in COMMANDS.items():
        times = {"no_cache": [], "first": [], "second": []}
        for _ in range(reps):
            with tempfile.TemporaryDirectory() as tmp:
                out = (lambda i: os.path.join(tmp, f"out{i}")) if args[0] != "predict" else \
                    (lambda i: None)
                cache = os.path.join(tmp, "cache")
                times["no_cache"].append(_run(args, None, out(0)))
                times["first"].append(_run(args, cache, out(1)))
                times["second"].append(_run(args, cache, out(2)))
        r = {"command": f"jaxinterp {name}", **{k: float(np.median(v)) for k, v in times.items()}}
        r["imports"] = imports
        r["second_over_first"] = r["second"] / r["first"]
        print(r, flush=True)
        rows.append(r)
    return rows
