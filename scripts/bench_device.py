"""The accelerator benchmark (`scripts/bench.py --device gpu|tpu|cpu`): jaxinterp's attribution
methods on one device, ours only.

    python scripts/bench_device.py --device gpu            # writes docs/bench/device-gpu.json
    python scripts/bench_device.py --device cpu --quick    # vgg-mini, 3 methods, ~10 s on 2 cores

On the first device JAX finds for the platform (`JAX_PLATFORMS` set to it; without such a device
the run stops with one line naming the devices JAX does see). Header: the device kind, platform,
count, versions, and the device's measured matmul peak: a jitted `jnp.dot` of two 4096² float32
matrices (2048² with `--quick`), median of 5 timed calls after a warm-up, each timed call
dispatching 10 products on an accelerator (1 on the CPU) and blocking on the last. That is the
default precision, the one the methods run at (TF32 tensor cores on recent NVIDIA GPUs, bf16
passes on TPUs); on an accelerator also at `Precision.HIGHEST` (true fp32) and in bfloat16.

Rows, per model and method: vgg-mini (shipped weights, 64²), VGG16 and ResNet-50 (random weights,
`key=0`, 224²), vit-mini (shipped, 64², if it loads); saliency, guided backprop (not on vit-mini:
no ReLU), Grad-CAM, SmoothGrad (50 samples), integrated gradients (50 steps), occlusion (vgg-mini
only: window 16, stride 8), attention rollout and Chefer's relevance (vit-mini only), each
unchunked (`batch_size=None`) with the options of scripts/bench.py (`ours_method`). Images per
call: on an accelerator 256 (single-pass methods) / 32 (multi-pass) on the 64² models and 32 / 4
at 224²; on the CPU bench.py's `MODELS[arch]["n"]`. Weights and images are placed on the device
before the clock starts. Per row: images/s from the median of 5 timed calls after the first
call, the first call's seconds (compile included; JAX's persistent cache off), and achieved
GFLOP/s: the floating-point operations of one call from XLA's cost analysis of the lowered
program (not compiled a second time; within 2 % of bench.py's `xla_flops` of the compiled one
on the CPU) over the median time. "Fraction of peak" is that over the default-precision matmul
peak above: a large dense product is the device's best case, so the fraction says how far a
method's mix of convolutions, reductions and elementwise work is from it (it is not a
utilisation counter, and can exceed 100 % where XLA's count is not what the device executes).

Memory, MB above what was in use before the row's first call (weights and images not counted;
the compiler's scratch counted where it comes from the same pool): on an accelerator from
`memory_stats()` (`bytes_in_use` before, `peak_bytes_in_use` after). The peak cannot be reset, so
it is the process's peak: exact where the row raised it, otherwise an upper bound, shown as "≤".
Each model runs in its own process (`--isolate row`: each row, for exact peaks at the cost of a
start-up per row). On the CPU: peak RSS sampled every 2 ms (bench.py's `PeakRSS`).
`--timeout S` kills a worker after S seconds (its rows are recorded as errors); `--quick` writes
under <out>/quick, as bench.py does.

Writes <out>/device-<device>.json (atomically) and prints the Markdown table; `device_table(path)`
renders that file for bench.py's `tables()`. The comparison with Captum / PyTorch, on the CPU and
on identical weights, is bench.py's attribution sections.
"""

from __future__ import annotations

import argparse
import json
import os
import platform as host_platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = Path(__file__).resolve().parent

DEVICES = ("cpu", "gpu", "tpu")
# JAX_PLATFORMS values tried per device, in order: "gpu" itself would expand to cuda, rocm and
# oneapi and fail on any one missing
PLATFORMS = {"cpu": ("cpu",), "gpu": ("cuda", "rocm"), "tpu": ("tpu",)}
# name -> (load_model args, kwargs, how its weights were made)
MODELS = {"vgg-mini": ((), {}, "shipped weights (trained on shapes)"),
          "vgg16": (("vgg16",), {"key": 0}, "random weights (key=0)"),
          "resnet50": (("resnet50",), {"key": 0}, "random weights (key=0)"),
          "vit-mini": (("vit-mini",), {}, "shipped weights (trained on shapes)")}
METHODS = ("saliency", "guided_backprop", "grad_cam", "smooth_grad", "integrated_gradients")
EXTRA = {"vgg-mini": ("occlusion",), "vit-mini": ("attention_rollout", "transformer_attribution")}
SKIP = {"vit-mini": ("guided_backprop",)}  # GELUs, no ReLU: jaxinterp refuses (UnsupportedReLU)
QUICK_METHODS = ("saliency", "grad_cam", "smooth_grad")
# images per call on an accelerator: (single-pass, multi-pass); the CPU uses bench.py's MODELS
N_ACCEL = {"vgg-mini": (256, 32), "vit-mini": (256, 32), "vgg16": (32, 4), "resnet50": (32, 4)}
N_QUICK = {"cpu": (8, 2), "accelerator": (64, 8)}
REPS = 5

TABLE_HEAD = ("| model | method | N | images/s | 1st call s | GFLOP/s (of peak) | memory MB |\n"
              "|---|---|---|---|---|---|---|")


class DeviceUnavailable(RuntimeError):
    """JAX has no device of the requested platform."""


def methods_of(arch: str, quick: bool) -> tuple[str, ...]:
    if quick:
        return QUICK_METHODS
    return tuple(n for n in METHODS if n not in SKIP.get(arch, ())) + EXTRA.get(arch, ())


def models_of(quick: bool) -> tuple[str, ...]:
    return ("vgg-mini",) if quick else tuple(MODELS)


# --- in a worker process (JAX_PLATFORMS set) ---------------------------------------------------

def _timed(f, *a) -> float:
    t0 = time.perf_counter()
    f(*a)
    return time.perf_counter() - t0


def _matmul(n: int, dtype: str, precision=None, inner: int = 1, reps: int = REPS) -> float:
    """GFLOP/s of a jitted n x n `jnp.dot`: median of `reps` timed rounds of `inner` products."""
    import functools

    import jax
    import jax.numpy as jnp

    a = jax.random.normal(jax.random.key(0), (n, n), dtype)
    b = jax.random.normal(jax.random.key(1), (n, n), dtype)
    mm = jax.jit(functools.partial(jnp.dot, precision=precision))
    mm(a, b).block_until_ready()

    def rounds():
        for _ in range(inner - 1):
            mm(a, b)
        mm(a, b).block_until_ready()  # one stream: the last done, all done

    rounds()
    t = statistics.median(_timed(rounds) for _ in range(reps))
    return 2 * n ** 3 * inner / t / 1e9


def _header(spec: dict) -> dict:
    import jax

    try:
        devices = jax.devices()
    except Exception as e:  # noqa: BLE001 — RuntimeError; AssertionError for cuda without a GPU
        why = _first_line(e) if str(e).strip() else (
            "no NVIDIA GPU visible" if os.environ.get("JAX_PLATFORMS") == "cuda" else
            type(e).__name__)
        print("NODEVICE " + json.dumps(why), flush=True)
        sys.exit(3)
    d = devices[0]
    accel = d.platform != "cpu"
    n = 2048 if spec["quick"] else 4096
    matmul = {"n": n, "f32": _matmul(n, "float32", inner=10 if accel else 1)}
    if accel:
        matmul["f32_highest"] = _matmul(n, "float32", jax.lax.Precision.HIGHEST, inner=10)
        matmul["bf16"] = _matmul(n, "bfloat16", inner=10)
    import jaxlib

    cpu = host_platform.processor() or "unknown CPU"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"device_kind": d.device_kind, "platform": d.platform, "count": len(devices),
            "devices": [str(x) for x in devices], "jax": jax.__version__,
            "jaxlib": jaxlib.__version__, "host": f"{cpu}, {os.cpu_count()} cores",
            "matmul": matmul, "peak_gflops": matmul["f32"]}


class _Memory:
    """The row's memory: device `memory_stats()` where the device has them, else peak RSS."""

    def __init__(self, device):
        self.device = device
        stats = device.memory_stats() if device.platform != "cpu" else None
        self.kind = "device" if stats and "peak_bytes_in_use" in stats else "rss"

    def __enter__(self):
        if self.kind == "device":
            s = self.device.memory_stats()
            self.before = s["bytes_in_use"] / 2**20
            self.peak_before = s["peak_bytes_in_use"] / 2**20
        else:
            from bench import PeakRSS, rss_mb

            self.before = rss_mb()
            self._rss = PeakRSS().__enter__()
        return self

    def __exit__(self, *exc):
        if self.kind == "device":
            peak = self.device.memory_stats()["peak_bytes_in_use"] / 2**20
            exact = peak > self.peak_before  # this row raised the process's peak
        else:
            self._rss.__exit__(*exc)
            peak, exact = self._rss.peak, True
        self.result = {"kind": self.kind, "before_mb": self.before, "peak_mb": peak,
                       "delta_mb": peak - self.before, "exact": exact}


def _flops(name, m, layer, cfg, x, t) -> tuple[float, str]:
    """One call's floating-point operations from XLA's cost analysis of the lowered (unchunked)
    program; from the compiled one (bench.py's `xla_flops`) where the lowered gives none."""
    import jax

    from bench import ours_method, xla_flops

    try:
        cost = jax.jit(ours_method(name, layer, cfg)).lower(m, x, t).cost_analysis()
        cost = cost[0] if isinstance(cost, (list, tuple)) else cost
        if cost and cost.get("flops"):
            return float(cost["flops"]), "lowered"
    except Exception:  # noqa: BLE001 — fall back to compiling
        pass
    return xla_flops(name, m, layer, cfg, x, t), "compiled"


def _first_line(e: BaseException) -> str:
    s = str(e).strip()
    return f"{type(e).__name__}: {s.splitlines()[0][:300] if s else ''}"


def _rows(spec: dict) -> None:
    """Measures spec's rows, printing each as a `ROW {json}` line when done."""
    import jax
    import numpy as np

    import jaxinterp as ji
    from bench import MODELS as BENCH_MODELS
    from bench import SAMPLES, STEPS, ours_fn

    arch, dev = spec["arch"], jax.devices()[0]
    accel = dev.platform != "cpu"
    args, kwargs, weights = MODELS[arch]
    try:
        m = ji.load_model(*args, **kwargs)
    except Exception as e:  # noqa: BLE001 — e.g. vit-mini not shipped with this version
        print("ROW " + json.dumps({"arch": arch, "method": "(load_model)", "n": 0,
                                   "error": _first_line(e)}), flush=True)
        return
    try:  # on the device once, not copied per call (load_model places them; kept for safety)
        m = jax.device_put(m, dev)
    except Exception:  # noqa: BLE001 — a model that is no pytree: its variables only
        m = m.with_variables(jax.device_put(m.variables, dev))
    size = tuple(m.input_size)
    cfg = {**BENCH_MODELS.get(arch, {"window": 16, "stride": 8}), "size": size[0]}
    layer = ji.attribution.default_layer(m)
    if spec["quick"]:
        sizes = N_QUICK["accelerator" if accel else "cpu"]
    else:
        sizes = N_ACCEL[arch] if accel else BENCH_MODELS.get(arch, BENCH_MODELS["vgg-mini"])["n"]
    for name in spec["methods"]:
        multi = ji.attribution.METHODS[name].chunked
        n = sizes[multi]
        row = {"arch": arch, "method": name, "n": n, "size": list(size), "weights": weights}
        try:
            rng = np.random.default_rng(0)
            x = jax.device_put(rng.random((n, *size, 3), dtype=np.float32), dev)
            t = jax.device_put((np.arange(n) % m.num_classes).astype(np.int32), dev)
            f = ours_fn(name, m, layer, cfg)  # the call, blocked on
            with _Memory(dev) as mem:
                first = _timed(f, x, t)
                times = [_timed(f, x, t) for _ in range(REPS)]
            med = statistics.median(times)
            flops, source = _flops(name, m, layer, cfg, x, t)
            row.update({"first_s": first, "median_s": med, "times_s": times,
                        "images_per_s": n / med, "flops": flops, "flops_from": source,
                        "gflops": flops / med / 1e9, "memory": mem.result})
            if name == "smooth_grad":
                row["samples"] = SAMPLES
            if name == "integrated_gradients":
                row["steps"] = STEPS
            if name == "occlusion":
                row["window"], row["stride"] = cfg["window"], cfg["stride"]
        except Exception as e:  # noqa: BLE001 — e.g. out of memory: the row says so, others run
            row["error"] = _first_line(e)
        print("ROW " + json.dumps(row), flush=True)
        x = t = f = None  # noqa: F841 — free the row's buffers before the next


def worker(spec: dict) -> None:
    sys.path.insert(0, str(SCRIPTS))  # bench.py (it imports jax and jaxinterp, not torch)
    if spec["task"] == "header":
        print("HEADER " + json.dumps(_header(spec)), flush=True)
    else:
        _rows(spec)


# --- in the calling process (no JAX needed) ----------------------------------------------------

def _env(jax_platform: str) -> dict:
    # the first call compiles: no persistent compilation cache, whatever the caller's settings
    return dict(os.environ, JAX_PLATFORMS=jax_platform, JAX_ENABLE_COMPILATION_CACHE="false")


def _worker_lines(spec: dict, jax_platform: str, timeout: float | None):
    """Runs a worker on `spec` (with `JAX_PLATFORMS=jax_platform`), yielding its stdout lines;
    raises with its last stderr line."""
    with tempfile.TemporaryFile("w+") as err:
        p = subprocess.Popen([sys.executable, __file__, "--worker", json.dumps(spec)],
                             stdout=subprocess.PIPE, stderr=err, text=True,
                             env=_env(jax_platform))
        late = threading.Event()
        timer = threading.Timer(timeout, lambda: (late.set(), p.kill())) if timeout else None
        if timer:
            timer.start()
        try:
            for line in p.stdout:
                yield line.rstrip("\n")
            rc = p.wait()
        finally:
            if timer:
                timer.cancel()
            if p.poll() is None:
                p.kill()
                p.wait()
        if rc:
            err.seek(0)
            lines = [s for s in err.read().strip().splitlines() if s.strip()]
            why = f"killed after the {timeout:g} s timeout" if late.is_set() else \
                (lines[-1] if lines else f"exit status {rc}")
            raise RuntimeError(f"worker {spec.get('arch', spec['task'])} failed: {why}")


def visible_devices() -> str:
    """The devices JAX sees when free to choose (a fresh process), as one line."""
    code = ("import jax; print(', '.join(f'{d} ({d.platform}' + (f', {d.device_kind})' "
            "if d.device_kind != d.platform else ')') for d in jax.devices()))")
    env = {k: v for k, v in os.environ.items() if k != "JAX_PLATFORMS"}
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    out = r.stdout.strip().splitlines()
    return out[-1] if r.returncode == 0 and out else "none (JAX fails to start)"


def _head(device: str, quick: bool, timeout: float | None) -> tuple[dict, str]:
    """The device and its matmul peak, measured in a worker, and the `JAX_PLATFORMS` value that
    found it; `DeviceUnavailable` (with the devices JAX does see) where none does."""
    failed = []
    for jax_platform in PLATFORMS[device]:
        try:
            for line in _worker_lines({"task": "header", "quick": quick}, jax_platform, timeout):
                if line.startswith("HEADER "):
                    return json.loads(line[7:]), jax_platform
                if line.startswith("NODEVICE "):
                    why = json.loads(line[9:]).split(" (set JAX_PLATFORMS")[0].rstrip(". ")
                    failed.append(f"{jax_platform}: {why}" if len(PLATFORMS[device]) > 1 else why)
                    break
            else:
                raise RuntimeError("the worker printed no result")
        except RuntimeError as e:
            raise RuntimeError(f"measuring the {device} header: {e}") from None
    hint = "; NVIDIA GPUs need the CUDA plugin: pip install -U \"jax[cuda12]\"" \
        if device == "gpu" else ""
    raise DeviceUnavailable(f"JAX has no {device} device here ({'; '.join(failed)}); it sees: "
                            f"{visible_devices()}{hint}")


def _fmt_num(v: float) -> str:
    return f"{v:,.0f}" if v >= 100 else f"{v:.1f}" if v >= 1 else f"{v:.2f}"


def fmt_row(r: dict, peak: float) -> str:
    """One Markdown row of the device table."""
    if "error" in r:
        return f"| {r['arch']} | {r['method']} | {r['n']} | error: {r['error']} | | | |"
    mem = r["memory"]
    mb = f"{'' if mem['exact'] else '≤ '}{max(mem['delta_mb'], 0):,.0f}"
    return (f"| {r['arch']} | {r['method']} | {r['n']} | {_fmt_num(r['images_per_s'])} | "
            f"{r['first_s']:.1f} | {_fmt_num(r['gflops'])} ({100 * r['gflops'] / peak:.0f} %) | "
            f"{mb} |")


def _head_lines(h: dict) -> list[str]:
    mm = h["matmul"]
    extra = "".join(f", {label} {_fmt_num(mm[k])}" for k, label in
                    (("f32_highest", "fp32 HIGHEST"), ("bf16", "bf16")) if k in mm)
    mem = "device memory_stats, peak per process (≤: set by an earlier row)" \
        if h["platform"] != "cpu" else "peak RSS"
    return [f"{h['device_kind']} ({h['platform']}) x{h['count']}, jax {h['jax']}"
            f"{', quick' if h.get('quick') else ''}. Matmul {mm['n']}² GFLOP/s: fp32 (default "
            f"precision; the peak below) {_fmt_num(mm['f32'])}{extra}. Memory: MB over the "
            f"row's start, {mem}."]


def device_table(path: str | os.PathLike) -> str:
    """The Markdown table (with its one-line header) of a device-<device>.json file."""
    r = json.loads(Path(path).read_text())
    peak = r["peak_gflops"]
    return "\n".join(_head_lines(r) + ["", TABLE_HEAD] + [fmt_row(row, peak) for row in r["rows"]])


def bench_device(device: str, quick: bool, out: Path, isolate: str = "model",
                 timeout: float | None = None) -> dict:
    """Measures jaxinterp's methods on the first `device` ("cpu", "gpu", "tpu") JAX finds, in
    worker processes (whatever platform the calling process's JAX uses), and writes
    `out/device-<device>.json`.

    Args:
      device: the JAX platform.
      quick: vgg-mini only, 3 methods, small batches, a 2048² matmul.
      out: the output directory (created).
      isolate: "model" (one process per model) or "row" (one per row: exact device peaks).
      timeout: seconds per worker process (None: no limit).
    Returns:
      The JSON written: header, settings, notes and rows.
    Raises:
      DeviceUnavailable: JAX has no such device here (message: the devices it sees).
    """
    if device not in DEVICES:
        raise ValueError(f"device must be one of {', '.join(DEVICES)}, got {device!r}")
    t0 = time.time()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    head, jax_platform = _head(device, quick, timeout)
    head = {**head, "quick": quick, "jax_platforms": jax_platform}
    peak = head["peak_gflops"]
    print("\n".join(_head_lines(head)) + f"\n\n{TABLE_HEAD}", flush=True)
    rows = []
    for arch in models_of(quick):
        methods = methods_of(arch, quick)
        groups = [methods] if isolate == "model" else [(m,) for m in methods]
        for group in groups:
            spec = {"task": "rows", "arch": arch, "methods": list(group), "quick": quick}
            try:
                for line in _worker_lines(spec, jax_platform, timeout):
                    if line.startswith("ROW "):
                        rows.append(json.loads(line[4:]))
                        print(fmt_row(rows[-1], peak), flush=True)
            except RuntimeError as e:  # the process died (e.g. killed out of memory)
                done = {r["method"] for r in rows if r["arch"] == arch}
                for name in (n for n in group if n not in done):
                    rows.append({"arch": arch, "method": name, "n": 0, "error": str(e)[:300]})
                    print(fmt_row(rows[-1], peak), flush=True)
    result = {**head, "device": device, "reps": REPS,
              "isolate": isolate, "notes": {
                  "images_per_s": f"images per call / median of {REPS} timed calls after the "
                                  "first (weights and images already on the device)",
                  "first_s": "the first call, compile included (persistent cache off)",
                  "gflops": "XLA's cost analysis of the unchunked program (flops_from: lowered "
                            "= before optimization, compiled = bench.py's xla_flops) / median "
                            "time; fraction of peak = gflops / peak_gflops (matmul.f32, default "
                            "precision)",
                  "memory": "MB above what was in use before the row's first call: device "
                            "memory_stats (bytes_in_use before, peak_bytes_in_use after; the peak "
                            "is cumulative over the worker process, which runs one "
                            f"{'row' if isolate == 'row' else 'model'}: exact=false marks an "
                            "upper bound set by an earlier row) or, on the CPU, peak RSS sampled "
                            "every 2 ms; the compiler's scratch (GPU autotuning) included where "
                            "it is allocated from the same pool"},
              "rows": rows, "seconds": time.time() - t0,
              "date": time.strftime("%Y-%m-%d %H:%M:%S")}
    path = out / f"device-{device}.json"
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(result, indent=1))
    os.replace(tmp, path)
    return result


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", choices=DEVICES, default="cpu")
    ap.add_argument("--quick", action="store_true",
                    help="vgg-mini, 3 methods, small batches (written under <out>/quick)")
    ap.add_argument("--out", default=str(ROOT / "docs" / "bench"))
    ap.add_argument("--isolate", choices=("model", "row"), default="model",
                    help="one worker process per model (default) or per row (exact peaks)")
    ap.add_argument("--timeout", type=float, default=None, help="seconds per worker process")
    ap.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:  # JAX_PLATFORMS comes from the caller's environment (`_env`)
        worker(json.loads(args.worker))
        return
    # before anything here imports jax (nothing does: the workers get theirs from `_env`)
    os.environ["JAX_PLATFORMS"] = PLATFORMS[args.device][0]
    out = Path(args.out) / ("quick" if args.quick else "")  # as bench.py: quick never replaces
    try:
        bench_device(args.device, args.quick, out, args.isolate, args.timeout)
    except DeviceUnavailable as e:
        print(f"bench_device: {e}", file=sys.stderr)
        sys.exit(2)
    print(f"\ndone -> {out / f'device-{args.device}.json'}")


if __name__ == "__main__":
    main()
