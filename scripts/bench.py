"""Benchmark: jaxinterp against Captum / PyTorch on identical weights, in one run.

    python scripts/bench.py --quick      # under 10 minutes on the 2-core CPU
    python scripts/bench.py              # the README tables (about 40 minutes)

Per attribution method and model (vgg-mini at 64x64, VGG16 and ResNet-50 at 224x224; seeded
random weights
copied from torch into jaxinterp through a .safetensors file): the first call (compile included)
of each side, then interleaved timed calls (ours, theirs, ours, ...) and their medians per image;
peak memory of each side in separate processes (RSS sampled every 2 ms during the calls, minus
the RSS before the first call). The machine's limit: the best fp32 matmul GFLOP/s of XLA and
PyTorch, and each method's achieved GFLOP/s from XLA's cost analysis as a fraction of it. Feature
visualization: steps/s of `ji.visualize` against the same loop written in PyTorch, and K units in
one vmapped call against K calls. Scaling curves: time per image against batch size and
against SmoothGrad samples / IG steps, and peak memory with and without `batch_size=`.

The peers' slow methods (`--only peers`, scripts/bench_peers.py): Score-CAM against
pytorch-grad-cam, KernelSHAP against Captum, XRAI against PAIR's `saliency`, VGG16 at 224².
Vision transformers (`--only vit`, scripts/bench_vit.py): rollout, Chefer's CVPR / ICCV 2021
relevance and AttnLRP / CP-LRP on ViT-B/16 at 4x224² against Chefer's code and LXT.
Optimization (`--only optimize,style`, scripts/bench_optimize.py): PGD, DeepDream and feature
inversion against the same algorithms written as PyTorch loops; texture synthesis and style
transfer against the PyTorch tutorial's L-BFGS loop; dissection against a NetDissect-Lite-style
loop (`--only concepts`, scripts/bench_concepts.py). Data-set runs from image folders against
the same calls on preloaded arrays and Captum with a DataLoader (`--only runs`,
scripts/bench_runs.py). Also: jaxinterp's compiler options against XLA's defaults per method (`--only options`), and
the cost of the value checks compiled into a user's jit (`--only checks`).

Each section writes its own file, docs/bench/<section>.json (attribution-vgg-mini.json, ...,
with the machine and matmul peak of that run), so a partial re-run (`--only`) replaces only
what it measured; docs/bench/tables.md is rebuilt from the files present; scaling.png.
"Ours / Captum 1st call" is measured in a fresh process (compile included, no warm-up).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # the plain-torch reference VGG
sys.path.insert(0, str(ROOT / "scripts"))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

import jaxinterp as ji  # noqa: E402

# the relevance methods have their own section (peers: Captum's DeepLift, zennit), and so
# have the peers' other methods (pytorch-grad-cam's CAMs, Captum's Shapley family, PAIR's)
RELEVANCE = ("deeplift", "lrp")
# the methods with a Captum peer (not CAM: vgg-mini only, no Captum peer), and occlusion
# without the incremental pass
METHODS = ("saliency", "input_x_gradient", "deconvnet", "guided_backprop", "grad_cam",
           "guided_grad_cam", "smooth_grad", "integrated_gradients", "occlusion",
           "occlusion_full")
MULTI = tuple(n for n in METHODS if ji.attribution.METHODS[n.removesuffix("_full")].chunked)
# our rows with the same Captum call as another row (whose Captum chunking they reuse)
CAPTUM_SAME = {"occlusion_full": "occlusion"}
# per model: input side, images per call (single-pass, multi-pass), occlusion window / stride
MODELS = {"vgg-mini": {"size": 64, "n": (16, 4), "window": 16, "stride": 8},
          "vgg16": {"size": 224, "n": (2, 1), "window": 32, "stride": 16},
          "resnet50": {"size": 224, "n": (2, 1), "window": 32, "stride": 16}}
# ResNet-50 (a wrapped linen module; guided backprop through the jaxpr rewrite): these methods
RESNET_METHODS = ("saliency", "guided_backprop", "grad_cam", "smooth_grad", "integrated_gradients")
SAMPLES, STEPS = 50, 50
# chunk sizes tried for the multi-pass methods (ours: batch_size=; Captum: nt_samples_batch_size,
# internal_batch_size, perturbations_per_eval (None -> 1)); each side runs at its fastest
CHUNKS = {"vgg-mini": (None, 8, 16), "vgg16": (None, 10), "resnet50": (None, 10)}


# --- the two sides on identical weights --------------------------------------------------------

def setup(arch, n, seed=0):
    """(jaxinterp model, torch model on [0, 1] NCHW, torch net, x [n,H,W,3], targets, CAM layer)."""
    import torch
    from safetensors.torch import save_file
    from torch_vgg import Normalized, seeded_vgg

    torch.manual_seed(seed)
    if arch.startswith("resnet"):
        from torch_resnet import seeded_resnet

        net = seeded_resnet(arch, seed, num_classes=1000)
    else:
        kw = {"num_classes": 8, "batch_norm": True} if arch == "vgg-mini" else {}
        net = seeded_vgg(arch, seed, **kw)
    with tempfile.TemporaryDirectory() as d:
        save_file(net.state_dict(), f"{d}/w.safetensors")
        jm = ji.import_weights(f"{d}/w.safetensors", arch=arch)
    tm = Normalized(net, jm.preprocess.mean, jm.preprocess.std).eval()
    size = MODELS[arch]["size"]
    x = np.random.default_rng(seed).random((n, size, size, 3), dtype=np.float32)
    target = np.arange(n) % jm.num_classes
    layer = ji.attribution.default_layer(jm)
    return jm, tm, net, x, target, layer


def ours_method(name, layer, cfg, batch_size=None, samples=SAMPLES, steps=STEPS):
    """`f(m, x, t)` running one jaxinterp method (from the registry) with the benchmark's
    settings (traceable)."""
    w, s = cfg["window"], cfg["stride"]
    options = {"grad_cam": {"layer": layer}, "guided_grad_cam": {"layer": layer},
               "smooth_grad": {"samples": samples}, "integrated_gradients": {"steps": steps},
               "occlusion": {"window": (w, w), "stride": (s, s)},
               "occlusion_full": {"window": (w, w), "stride": (s, s), "incremental": False}}
    method = ji.attribution.METHODS[name.removesuffix("_full")]
    return lambda m, x, t: method(m, x, t, batch_size=batch_size, **options.get(name, {}))


def ours_fn(name, jm, layer, cfg, **kw):
    """`f(x, t)` running one jaxinterp method on `jm`, results blocked on."""
    f = ours_method(name, layer, cfg, **kw)
    return lambda x, t: jax.block_until_ready(f(jm, x, t))


def captum_fn(name, tm, net, layer, cfg, batch_size=None, samples=SAMPLES, steps=STEPS):
    """`f(x, t)` running the Captum equivalent on NCHW tensors made from NHWC numpy input.

    `batch_size` is Captum's chunking: `nt_samples_batch_size`, `internal_batch_size` or
    occlusion's `perturbations_per_eval`.
    """
    import torch
    from captum import attr as ca

    lyr = getattr(net, layer) if layer.startswith("layer") else \
        net.features[int(layer.split(".")[1])]
    size = cfg["size"]
    methods = {
        "saliency": lambda i, t: ca.Saliency(tm).attribute(i, target=t, abs=False),
        "input_x_gradient": lambda i, t: ca.InputXGradient(tm).attribute(i, target=t),
        "deconvnet": lambda i, t: ca.Deconvolution(tm).attribute(i, target=t),
        "guided_backprop": lambda i, t: ca.GuidedBackprop(tm).attribute(i, target=t),
        "grad_cam": lambda i, t: ca.LayerAttribution.interpolate(
            ca.LayerGradCam(tm, lyr).attribute(i, target=t, relu_attributions=True),
            (size, size), "bilinear"),
        "guided_grad_cam": lambda i, t: ca.GuidedGradCam(tm, lyr).attribute(
            i, target=t, interpolate_mode="bilinear"),
        "smooth_grad": lambda i, t: ca.NoiseTunnel(ca.Saliency(tm)).attribute(
            i, target=t, nt_type="smoothgrad", nt_samples=samples, stdevs=0.15,
            nt_samples_batch_size=batch_size, abs=False),
        "integrated_gradients": lambda i, t: ca.IntegratedGradients(tm).attribute(
            i, target=t, n_steps=steps, internal_batch_size=batch_size),
        "occlusion": lambda i, t: ca.Occlusion(tm).attribute(
            i, target=t, sliding_window_shapes=(3, cfg["window"], cfg["window"]),
            strides=(3, cfg["stride"], cfg["stride"]), baselines=0.0,
            perturbations_per_eval=batch_size or 1),
    }
    f = methods[CAPTUM_SAME.get(name, name)]

    def run(x, t):
        i = torch.from_numpy(np.ascontiguousarray(x)).permute(0, 3, 1, 2).requires_grad_(True)
        return f(i, torch.from_numpy(t)).detach()

    return run


# --- measuring ---------------------------------------------------------------------------------

def rss_mb() -> float:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


class PeakRSS:
    """Samples this process's RSS every 2 ms in a thread; `.peak` is the largest seen."""

    def __enter__(self):
        self.peak, self._stop = rss_mb(), False
        self._t = threading.Thread(target=self._poll, daemon=True)
        self._t.start()
        return self

    def _poll(self):
        while not self._stop:
            self.peak = max(self.peak, rss_mb())
            time.sleep(0.002)

    def __exit__(self, *exc):
        self._stop = True
        self._t.join()


def timed(f, *a):
    t0 = time.perf_counter()
    f(*a)
    return time.perf_counter() - t0


def interleaved(fs, args, reps, warm=2):
    """First-call seconds and median seconds of each function in `fs`, run in turn `reps` times
    after `warm` more untimed calls each."""
    first = [timed(f, *args) for f in fs]
    for _ in range(warm):
        for f in fs:
            f(*args)
    times = [[] for _ in fs]
    for _ in range(reps):
        for i, f in enumerate(fs):
            times[i].append(timed(f, *args))
    return first, [statistics.median(t) for t in times]


def worker(spec: dict) -> dict:
    """One side, one method, in this (fresh) process: first call, then peak memory of 2 calls."""
    cfg = MODELS[spec["arch"]]
    jm, tm, net, x, t, layer = setup(spec["arch"], spec["n"])
    kw = {k: spec[k] for k in ("batch_size", "samples", "steps") if k in spec}
    if spec["side"] == "ours":
        f = ours_fn(spec["method"], jm, layer, cfg, **kw)
    else:
        import torch

        torch.set_grad_enabled(True)
        kw["batch_size"] = spec.get("captum_batch_size")
        f = captum_fn(spec["method"], tm, net, layer, cfg, **kw)
    del jm, tm
    base = rss_mb()
    with PeakRSS() as p:
        first = timed(f, x, t)
        f(x, t)
    return {"first_s": first, "peak_mb": p.peak, "delta_mb": p.peak - base}


def in_subprocess(spec: dict) -> dict:
    r = subprocess.run([sys.executable, __file__, "--worker", json.dumps(spec)],
                       capture_output=True, text=True)
    if r.returncode:
        return {"error": r.stderr.strip().splitlines()[-1] if r.stderr.strip() else "failed"}
    return json.loads(r.stdout.strip().splitlines()[-1])


def matmul_peak(n=4096, reps=5) -> dict:
    """Best fp32 matmul GFLOP/s of XLA and of PyTorch on this machine."""
    import torch

    a = jax.random.normal(jax.random.key(0), (n, n))
    mm = jax.jit(jnp.dot)
    mm(a, a).block_until_ready()
    tj = min(timed(lambda: mm(a, a).block_until_ready()) for _ in range(reps))
    b = torch.randn(n, n)
    torch.mm(b, b)
    tt = min(timed(lambda: torch.mm(b, b)) for _ in range(reps))
    flops = 2 * n ** 3
    return {"xla": flops / tj / 1e9, "torch": flops / tt / 1e9}


def xla_flops(name, jm, layer, cfg, x, t) -> float:
    """Floating-point operations of one call, from XLA's cost analysis of the compiled program."""
    fn = ours_method(name, layer, cfg)
    cost = jax.jit(fn).lower(jm, jnp.asarray(x), jnp.asarray(t)).compile().cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    return float(cost.get("flops", 0.0))


# --- the sections ------------------------------------------------------------------------------

def bench_attribution(arch, reps, quick, peak) -> list[dict]:
    import torch

    cfg = MODELS[arch]
    rows, captum_chunk = [], {}
    methods = METHODS if not (quick and arch == "vgg16") else (
        "saliency", "guided_backprop", "grad_cam", "guided_grad_cam")
    methods = RESNET_METHODS if arch == "resnet50" else methods
    for name in methods:
        n = cfg["n"][name in MULTI]
        jm, tm, net, x, t, layer = setup(arch, n)
        ours_bs = theirs_bs = None
        if name in MULTI:  # each side at its fastest chunking, chosen by one timed trial each
            cands = CHUNKS[arch]
            def trial(f):
                f(x, t)  # compile / warm up first
                return timed(f, x, t)

            ours_bs = min(cands, key=lambda b: trial(ours_fn(name, jm, layer, cfg, batch_size=b)))
            theirs_cands = (4, 16, 64) if name.startswith("occlusion") else cands
            theirs_bs = captum_chunk.get(CAPTUM_SAME.get(name)) or min(theirs_cands, key=lambda b: trial(
                captum_fn(name, tm, net, layer, cfg, batch_size=b)))
            captum_chunk[name] = theirs_bs
        ours = ours_fn(name, jm, layer, cfg, batch_size=ours_bs)
        theirs = captum_fn(name, tm, net, layer, cfg, batch_size=theirs_bs)
        heavy = arch == "vgg16" and name in MULTI
        with torch.enable_grad():
            _, med = interleaved([ours, theirs], (x, t), 3 if heavy else reps,
                                     warm=1 if heavy else 2)
        flops = xla_flops(name, jm, layer, cfg, x, t)  # unchunked: loops are costed once
        row = {"arch": arch, "method": name, "n": n, "ours_s": med[0] / n, "captum_s": med[1] / n,
               "speedup": med[1] / med[0], "ours_first_s": None, "captum_first_s": None,
               "gflops": flops / med[0] / 1e9, "ours_batch_size": ours_bs,
               "captum_batch_size": theirs_bs}
        row["peak_frac"] = row["gflops"] / peak
        if not quick or arch == "vgg-mini":
            for side in ("ours", "captum"):
                spec = {"side": side, "arch": arch, "method": name, "n": n,
                        "batch_size": ours_bs, "captum_batch_size": theirs_bs}
                row[f"{side}_mem"] = in_subprocess(spec)  # first call + memory, fresh process
                row[f"{side}_first_s"] = row[f"{side}_mem"].get("first_s")
        rows.append(row)
        print(fmt_row(row), flush=True)
    return rows


def bench_relevance(reps, quick) -> list[dict]:
    """`lrp` (epsilon_plus_flat) against zennit's `EpsilonPlusFlat` and `deeplift` against
    Captum's `DeepLift` (on the twin with an identity before each max-pool, where Captum's rules
    are right), VGG16 at 224², N images per call, both sides in one interleaved run."""
    import torch
    from captum import attr as ca
    from torch_vgg import Logits, identity_before_maxpool
    from zennit_shim import import_zennit

    zennit = import_zennit()
    n = 2 if quick else 4
    jm, tm, net, x, t, layer = setup("vgg16", n)
    fixed = identity_before_maxpool(net).eval()
    mean, std = (torch.tensor(v).view(1, 3, 1, 1) for v in (jm.preprocess.mean, jm.preprocess.std))

    def normalized(x):
        return (torch.from_numpy(np.ascontiguousarray(x)).permute(0, 3, 1, 2) - mean) / std

    def zennit_lrp(x, tt):
        xn = normalized(x).requires_grad_(True)
        onehot = torch.nn.functional.one_hot(torch.from_numpy(tt), 1000).float()
        comp = zennit.composites.EpsilonPlusFlat()
        with zennit.attribution.Gradient(model=Logits(net), composite=comp) as attributor:
            return attributor(xn, onehot)[1]

    def captum_deeplift(x, tt):
        i = normalized(x).requires_grad_(True)
        return ca.DeepLift(Logits(fixed)).attribute(i, target=torch.from_numpy(tt)).detach()

    pairs = {"lrp": (lambda x, tt: jax.block_until_ready(ji.lrp(jm, x, tt)), zennit_lrp,
                     "zennit EpsilonPlusFlat"),
             "deeplift": (lambda x, tt: jax.block_until_ready(ji.deeplift(jm, x, tt)),
                          captum_deeplift, "Captum DeepLift")}
    rows = []
    for name, (ours, theirs, peer) in pairs.items():
        with torch.enable_grad():
            firsts, med = interleaved([ours, theirs], (x, t), reps, warm=1)
        first = firsts[0]  # compilation included
        row = {"arch": "vgg16", "method": name, "peer": peer, "n": n, "ours_s": med[0] / n,
               "peer_s": med[1] / n, "speedup": med[1] / med[0], "ours_first_s": first}
        rows.append(row)
        print(f"| vgg16 | {name} | {peer} | {n} | {row['ours_s'] * 1e3:.0f} | "
              f"{row['peer_s'] * 1e3:.0f} | **{row['speedup']:.2f}x** | {first:.1f} |", flush=True)
    return rows


def fmt_row(r) -> str:
    mem = ""
    if "ours_mem" in r and "delta_mb" in r["ours_mem"] and "delta_mb" in r["captum_mem"]:
        mem = f" | {r['ours_mem']['delta_mb']:.0f} | {r['captum_mem']['delta_mb']:.0f}"
    elif "ours_mem" in r:
        mem = " | err | err"
    else:
        mem = " | – | –"
    chunks = ""
    if r.get("ours_batch_size", None) is not None or r.get("captum_batch_size", None) is not None:
        chunks = f" ({r['ours_batch_size']} / {r['captum_batch_size']})"
    first = lambda v, f: "–" if v is None else format(v, f)  # noqa: E731
    return (f"| {r['arch']} | {r['method']}{chunks} | {r['n']} | {r['ours_s'] * 1e3:.1f} | "
            f"{r['captum_s'] * 1e3:.1f} | **{r['speedup']:.2f}x** | "
            f"{first(r['ours_first_s'], '.1f')} | {first(r['captum_first_s'], '.2f')} | "
            f"{r['gflops']:.0f} ({100 * r['peak_frac']:.0f} %){mem} |")


TABLE_HEAD = ("| model | method | N | ours ms/img | Captum ms/img | speed-up | ours 1st call s "
              "(fresh process) | Captum 1st call s (fresh process) | ours GFLOP/s (of peak) | ours MB | Captum MB |\n"
              "|---|---|---|---|---|---|---|---|---|---|---|")


def torch_render_loop(tm, channel, size, steps, layer_index, seed=0):
    """Lucid's render loop in PyTorch: FFT + decorrelated colour + sigmoid, standard transforms
    (pad 12, jitter 8, scale + rotate as one affine resampling, jitter 4), Adam(0.05), channel
    mean of a conv layer. Returns seconds per step."""
    import torch
    import torch.nn.functional as F

    from jaxinterp.optvis.param import COLOR_DECORRELATION, spectrum_scale

    g = torch.Generator().manual_seed(seed)
    h = w = size
    spec = (torch.randn(1, 3, h, w // 2 + 1, 2, generator=g) * 0.01).requires_grad_(True)
    scale = torch.from_numpy(spectrum_scale(h, w))[None, None]
    color = torch.from_numpy(np.ascontiguousarray(COLOR_DECORRELATION.T))
    opt = torch.optim.Adam([spec], lr=0.05)
    scales = [1 + (i - 5) / 50 for i in range(11)]
    angles = list(range(-10, 11)) + 5 * [0]
    for p in tm.parameters():  # input gradients only, as on our side
        p.requires_grad_(False)
    feats = {}
    tm.net.features[layer_index].register_forward_hook(lambda m, i, o: feats.__setitem__("a", o))

    def image():
        s = torch.view_as_complex(spec) * scale
        img = torch.fft.irfftn(s, s=(h, w), dim=(2, 3), norm="ortho") / 4  # [1, 3, H, W]
        img = torch.einsum("bchw,cd->bdhw", img, color)
        return torch.sigmoid(img)

    def jitter(x, d):
        oy, ox = (int(v) for v in torch.randint(0, d + 1, (2,), generator=g))
        return x[:, :, oy:oy + x.shape[2] - d, ox:ox + x.shape[3] - d]

    def step():
        x = F.pad(image(), (12, 12, 12, 12), value=0.5)
        x = jitter(x, 8)
        s = scales[int(torch.randint(len(scales), (1,), generator=g))]
        a = np.deg2rad(angles[int(torch.randint(len(angles), (1,), generator=g))])
        theta = torch.tensor([[[np.cos(a) / s, -np.sin(a) / s, 0], [np.sin(a) / s, np.cos(a) / s, 0]]],
                             dtype=torch.float32)
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)
        x = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
        x = jitter(x, 4)
        tm(x)
        loss = -feats["a"][:, channel].mean()
        opt.zero_grad()
        loss.backward()
        opt.step()

    for _ in range(3):
        step()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    return (time.perf_counter() - t0) / steps


def bench_optvis(quick) -> dict:
    """Steps/s of ji.visualize vs the PyTorch loop (vgg-mini, 128 px), K units vmapped vs K calls."""
    import torch

    jm, tm, net, _, _, _ = setup("vgg-mini", 1)
    layer, index, channel, size = "features.23", 23, 9, 128
    steps = 64 if quick else 256
    obj = ji.objectives.channel(layer, channel)
    kw = {"size": size, "steps": steps, "redirect_relu": False}  # plain ReLU on both sides
    run = lambda **k: jax.block_until_ready(ji.visualize(jm, obj, **{**kw, **k}).images)  # noqa: E731
    first = timed(run)
    ours = statistics.median(timed(run) for _ in range(3)) / steps
    torch.set_grad_enabled(True)
    theirs = statistics.median(torch_render_loop(tm, channel, size, steps // 4, index, seed=s)
                               for s in range(3))
    k, ksteps = 8, 32 if quick else 128
    objs = [ji.objectives.channel(layer, c) for c in range(k)]
    ukw = {"size": 64, "steps": ksteps}
    one = lambda: jax.block_until_ready(ji.visualize_units(jm, objs, **ukw).images)  # noqa: E731
    sep = lambda: [jax.block_until_ready(ji.visualize(jm, o, **ukw).images) for o in objs]  # noqa: E731
    one(), sep()
    t_one = statistics.median(timed(one) for _ in range(3))
    t_sep = statistics.median(timed(sep) for _ in range(3))
    out = {"size": size, "steps": steps, "ours_steps_per_s": 1 / ours,
           "torch_steps_per_s": 1 / theirs, "speedup": theirs / ours, "ours_first_s": first,
           "units": k, "unit_steps": ksteps, "units_one_call_s": t_one, "units_k_calls_s": t_sep,
           "units_speedup": t_sep / t_one}
    print(json.dumps(out), flush=True)
    return out


def bench_scaling(quick) -> dict:
    """Time per image vs batch size and vs samples / steps (vgg-mini), memory with chunking."""
    import torch

    torch.set_grad_enabled(True)
    cfg = MODELS["vgg-mini"]
    out = {"batch": [], "samples": [], "memory": []}
    for n in (1, 4, 16) if quick else (1, 2, 4, 8, 16, 32, 64):
        jm, tm, net, x, t, layer = setup("vgg-mini", n)
        _, med = interleaved([ours_fn("saliency", jm, layer, cfg),
                              captum_fn("saliency", tm, net, layer, cfg)], (x, t), 3)
        out["batch"].append({"n": n, "ours_s": med[0] / n, "captum_s": med[1] / n})
    jm, tm, net, x, t, layer = setup("vgg-mini", 1)
    for s in (10, 50) if quick else (10, 25, 50, 100, 200):
        _, med = interleaved([ours_fn("smooth_grad", jm, layer, cfg, samples=s),
                              captum_fn("smooth_grad", tm, net, layer, cfg, samples=s),
                              ours_fn("integrated_gradients", jm, layer, cfg, steps=s),
                              captum_fn("integrated_gradients", tm, net, layer, cfg, steps=s)],
                             (x, t), 3)
        out["samples"].append({"samples": s, "sg_ours_s": med[0], "sg_captum_s": med[1],
                               "ig_ours_s": med[2], "ig_captum_s": med[3]})
    arch = "vgg-mini" if quick else "vgg16"
    for bs in (None, 10, 5):
        row = {"arch": arch, "batch_size": bs}
        for side in ("ours", "captum"):
            row[side] = in_subprocess({"side": side, "arch": arch, "method": "smooth_grad",
                                       "n": 1, "batch_size": bs, "captum_batch_size": bs})
        out["memory"].append(row)
    print(json.dumps(out), flush=True)
    return out


def plot_scaling(sc, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(1, 3, figsize=(13, 3.6))
    b = sc["batch"]
    ax[0].plot([r["n"] for r in b], [1e3 * r["ours_s"] for r in b], "o-", label="jaxinterp")
    ax[0].plot([r["n"] for r in b], [1e3 * r["captum_s"] for r in b], "s--", label="Captum")
    ax[0].set(xscale="log", yscale="log", xlabel="batch size", ylabel="ms per image",
              title="saliency, vgg-mini 64x64")
    s = sc["samples"]
    xs = [r["samples"] for r in s]
    for key, label, style in (("sg_ours_s", "SmoothGrad jaxinterp", "o-"),
                              ("sg_captum_s", "SmoothGrad Captum", "s--"),
                              ("ig_ours_s", "IG jaxinterp", "^-"), ("ig_captum_s", "IG Captum", "v--")):
        ax[1].plot(xs, [r[key] for r in s], style, label=label)
    ax[1].set(xscale="log", yscale="log", xlabel="samples / steps", ylabel="s per image",
              title="vgg-mini 64x64, 1 image")
    m = sc["memory"]
    labels = [str(r["batch_size"]) for r in m]
    pos = np.arange(len(m))
    get = lambda r, side: r[side].get("delta_mb", np.nan)  # noqa: E731
    ax[2].bar(pos - 0.2, [get(r, "ours") for r in m], 0.4, label="jaxinterp")
    ax[2].bar(pos + 0.2, [get(r, "captum") for r in m], 0.4, label="Captum")
    ax[2].set_xticks(pos, labels)
    ax[2].set(xlabel="batch_size (samples at a time)", ylabel="peak MB over baseline",
              title=f"SmoothGrad 50 samples, {m[0]['arch']}")
    for a in ax:
        a.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def bench_options(reps) -> list[dict]:
    """jaxinterp's compiler options (`ji.compiler_options()`) against XLA's defaults, per
    method, same process, interleaved medians (the numbers `jaxinterp/_xla.py` quotes)."""
    rows = []
    for arch in ("vgg-mini", "vgg16"):
        cfg = MODELS[arch]
        for name in METHODS:
            multi = name in MULTI
            if arch == "vgg16" and multi and name != "occlusion":
                continue  # minutes per call: the single-pass rows and occlusion tell the story
            n = cfg["n"][multi]
            jm, tm, net, x, t, layer = setup(arch, n)
            bs = {"vgg-mini": 16, "vgg16": 10}[arch] if multi else None
            f = ours_fn(name, jm, layer, cfg, batch_size=bs)
            real = ji._xla.compiler_options

            def default(x, t):
                ji._xla.compiler_options = lambda: {}
                try:
                    return f(x, t)
                finally:
                    ji._xla.compiler_options = real

            _, med = interleaved([f, default], (x, t), 3 if arch == "vgg16" else reps)
            row = {"arch": arch, "method": name, "n": n, "batch_size": bs,
                   "tuned_s": med[0] / n, "default_s": med[1] / n, "speedup": med[1] / med[0]}
            rows.append(row)
            print(f"| {arch} | {name} | {n} | {row['tuned_s'] * 1e3:.1f} | "
                  f"{row['default_s'] * 1e3:.1f} | **{row['speedup']:.2f}x** |", flush=True)
    return rows


def bench_checks(reps) -> list[dict]:
    """Cost of the value checks compiled into a user's jit (`jaxinterp.checks`): `m(x)` with
    and without its image check, inside `jax.jit`."""
    rows = []
    for arch in ("vgg-mini", "vgg16"):
        jm, _, _, x, t, _ = setup(arch, MODELS[arch]["n"][0])
        checked = jax.jit(lambda m, x: m(x)[0])
        unchecked = jax.jit(lambda m, x: m(x, check=False)[0])
        fs = [lambda x: checked(jm, x).block_until_ready(),
              lambda x: unchecked(jm, x).block_until_ready()]
        _, med = interleaved(fs, (x,), reps * 4)
        rows.append({"arch": arch, "n": len(x), "checked_s": med[0], "unchecked_s": med[1],
                     "overhead": med[0] / med[1] - 1})
        print(json.dumps(rows[-1]), flush=True)
    return rows


def machine() -> str:
    cpu = "unknown CPU"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import torch

    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return (f"{cpu}, {os.cpu_count()} cores, {mem:.0f} GiB; jax {jax.__version__} "
            f"({jax.default_backend()}), torch {torch.__version__}, captum "
            f"{__import__('captum').__version__}")


SECTIONS = ("vgg-mini", "vgg16", "resnet50", "relevance", "peers", "vit", "runs", "optvis", "optimize", "style", "concepts", "scaling", "options",
            "checks", "cli")


def _peer_head(peer: str) -> list[str]:
    """Columns of a section timed against a peer's own code (peers, vit)."""
    return ["model", "method", peer, "N", "timed calls", "ours s/img", f"{peer} s/img",
            "speed-up", "ours 1st call s", f"{peer} 1st call s", "outputs' max difference / max"]


def _peer_cells(r: dict, seconds: str) -> list:
    return [r["arch"], r["method"], r["peer"], r["n"], r["reps"], format(r["ours_s"], seconds),
            format(r["peer_s"], seconds), f"**{r['speedup']:.2f}x**", f"{r['ours_first_s']:.1f}",
            f"{r['peer_first_s']:.1f}",
            "—" if r["max_rel_diff"] is None else f"{r['max_rel_diff']:.1e}"]


def tables(out: Path) -> str:
    """The Markdown tables of every section file present in `out`."""
    lines = []
    for arch in ("vgg-mini", "vgg16", "resnet50"):
        f = out / f"attribution-{arch}.json"
        if f.exists():
            r = json.loads(f.read_text())
            lines += [f"{arch}: {r['machine']}. fp32 matmul peak: XLA {r['matmul']['xla']:.0f}, "
                      f"PyTorch {r['matmul']['torch']:.0f} GFLOP/s.", "", TABLE_HEAD]
            lines += [fmt_row(row) for row in r["rows"]] + [""]
    extra = {"relevance": (["model", "method", "peer", "N", "ours ms/img", "peer ms/img",
                            "speed-up", "ours 1st call s"],
                           lambda r: [r["arch"], r["method"], r["peer"], r["n"],
                                      f"{r['ours_s'] * 1e3:.0f}", f"{r['peer_s'] * 1e3:.0f}",
                                      f"**{r['speedup']:.2f}x**", f"{r['ours_first_s']:.1f}"]),
             "peers": (_peer_head("peer"), lambda r: _peer_cells(r, ".1f")),
             "vit": (_peer_head("reference"), lambda r: _peer_cells(r, ".2f")),
             "options": (["model", "method", "N", "tuned ms/img", "XLA default ms/img", "speed-up"],
                         lambda r: [r["arch"], r["method"], r["n"], f"{r['tuned_s'] * 1e3:.1f}",
                                    f"{r['default_s'] * 1e3:.1f}", f"**{r['speedup']:.2f}x**"]),
             "optimize": (["method", "model", "N", "ours s/call", "PyTorch loop s/call", "speed-up",
                           "ours 1st call s"],
                          lambda r: [r["name"], r["model"], r["n"], f"{r['ours_s']:.2f}",
                                     f"{r['torch_s']:.2f}", f"**{r['speedup']:.2f}x**",
                                     f"{r['ours_first_s']:.1f}"] if "iterations" not in r else None),
             "style": (["method", "model", "iterations", "ours ms/iter", "tutorial ms/iter",
                        "speed-up per iteration", "tutorial's best loss", "ours: iterations (s) to "
                        "reach it", "tutorial: s to reach it", "ours 1st call s"],
                       lambda r: [r["name"], r["model"], r["iterations"],
                                  f"{1e3 * r['ours_s'] / r['iterations']:.1f}",
                                  f"{1e3 * r['torch_s'] / r['iterations']:.1f}",
                                  f"**{r['speedup']:.2f}x**", f"{r['torch_final_loss']:.4g}",
                                  "not reached" if r["ours_iterations_to_torch_loss"] is None else
                                  f"{r['ours_iterations_to_torch_loss']} "
                                  f"({r['ours_s_to_torch_loss']:.2f})",
                                  f"{r['torch_s_to_its_loss']:.2f}", f"{r['ours_first_s']:.1f}"]
                       if "iterations" in r else None),
             "concepts": (["dissection (vgg-mini, 4 layers, 240 units)", "images", "s",
                           "images/s", "speed-up", "peak RSS MB"],
                          lambda r: [r["side"], r["images"], f"{r['seconds']:.1f}",
                                     f"{r['images_per_s']:.1f}", f"**{r['speedup']:.1f}x**",
                                     "—" if r["peak_mb"] is None else f"{r['peak_mb']:.0f}"]),
             "runs": (["data-set run (saliency)", "images", "batch", "ours: folder -> zarr, img/s",
                       "ours: same calls on preloaded arrays, img/s", "compute busy",
                       "Captum + DataLoader, img/s", "speed-up"],
                      lambda r: [f"{r['arch']} ({r['format']})", r["images"], r["batch"],
                                 f"{r['pipeline_ips']:.1f}", f"{r['preloaded_ips']:.1f}",
                                 f"{100 * r['busy']:.0f} %", f"{r['captum_ips']:.1f}",
                                 f"**{r['speedup']:.2f}x**"]),
             "cli": (["whole process", "cache off s", "first run s (empty cache)",
                      "second run s (cache warm)", "second / first", "imports alone s"],
                     lambda r: [r["command"], f"{r['no_cache']:.1f}", f"{r['first']:.1f}",
                                f"{r['second']:.1f}", f"**{100 * r['second_over_first']:.0f} %**",
                                f"{r['imports']:.1f}"]),
             "checks": (["model", "N", "jit(m(x)) with checks ms", "without ms", "overhead"],
                        lambda r: [r["arch"], r["n"], f"{r['checked_s'] * 1e3:.2f}",
                                   f"{r['unchecked_s'] * 1e3:.2f}", f"{100 * r['overhead']:.1f} %"])}
    for name, (head, cells) in extra.items():
        f = out / f"{name}.json"
        if f.exists():
            rows = [c for c in map(cells, json.loads(f.read_text())["rows"]) if c is not None]
            if rows:
                lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
                lines += ["| " + " | ".join(map(str, c)) + " |" for c in rows] + [""]
    f = out / "optvis.json"
    if f.exists():
        o = json.loads(f.read_text())
        lines += [f"Feature visualization ({o['machine']}): ours {o['ours_steps_per_s']:.0f} "
                  f"steps/s, the PyTorch loop {o['torch_steps_per_s']:.0f} steps/s "
                  f"(**{o['speedup']:.2f}x**; first call with compile {o['ours_first_s']:.1f} s). "
                  f"{o['units']} channels x {o['unit_steps']} steps at 64 px: one vmapped call "
                  f"{o['units_one_call_s']:.2f} s, {o['units']} separate calls "
                  f"{o['units_k_calls_s']:.2f} s (**{o['units_speedup']:.2f}x**).", ""]
    f = out / "scaling.json"
    if f.exists():
        sc = json.loads(f.read_text())
        b, sm, mem = sc["batch"], sc["samples"], sc["memory"]
        row = lambda cells: "| " + " | ".join(map(str, cells)) + " |"  # noqa: E731
        lines += [f"Scaling ({sc['machine']}):", "",
                  row(["batch N"] + [r["n"] for r in b]), "|---" * (len(b) + 1) + "|",
                  row(["saliency vgg-mini, ours ms/img"] + [f"{1e3 * r['ours_s']:.2f}" for r in b]),
                  row(["Captum ms/img"] + [f"{1e3 * r['captum_s']:.2f}" for r in b]), "",
                  row(["samples / steps (vgg-mini, 1 image, unchunked)"]
                      + [r["samples"] for r in sm]), "|---" * (len(sm) + 1) + "|",
                  row(["SmoothGrad ours / Captum ms"] + [
                      f"{1e3 * r['sg_ours_s']:.0f} / {1e3 * r['sg_captum_s']:.0f}" for r in sm]),
                  row(["IG ours / Captum ms"] + [
                      f"{1e3 * r['ig_ours_s']:.0f} / {1e3 * r['ig_captum_s']:.0f}" for r in sm]),
                  "", row([f"SmoothGrad 50 samples, {mem[0]['arch']}, 1 image: batch_size"]
                          + [str(r["batch_size"]) for r in mem]), "|---" * (len(mem) + 1) + "|"]
        for side in ("ours", "captum"):
            lines.append(row([f"{side} peak MB over baseline"] + [
                f"{r[side]['delta_mb']:.0f}" if "delta_mb" in r[side] else "err" for r in mem]))
        lines.append("")
    from bench_device import device_table

    for f in sorted(out.glob("device-*.json")):
        lines += [device_table(f), ""]
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="a subset, under 10 minutes")
    ap.add_argument("--only", default=None, help="comma list of sections: " + ",".join(SECTIONS))
    ap.add_argument("--out", default=str(ROOT / "docs" / "bench"))
    ap.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--device", choices=("cpu", "gpu", "tpu"), default=None,
                    help="only the accelerator benchmark (scripts/bench_device.py): ours on "
                         "this device, images/s, fraction of its matmul peak, memory")
    args = ap.parse_args()
    if args.worker:
        print(json.dumps(worker(json.loads(args.worker))))
        return
    if args.device:  # before `import torch`: ours only, each model in a subprocess
        from bench_device import DeviceUnavailable, bench_device

        out = Path(args.out) / ("quick" if args.quick else "")
        try:
            bench_device(args.device, args.quick, out)
        except DeviceUnavailable as e:
            sys.exit(f"bench.py: {e}")
        (out / "tables.md").write_text(tables(out) + "\n")
        return
    import torch

    torch.set_num_threads(os.cpu_count())
    sections = args.only.split(",") if args.only else list(SECTIONS)
    unknown = set(sections) - set(SECTIONS)
    if unknown:
        ap.error(f"unknown sections {', '.join(sorted(unknown))}; valid: {', '.join(SECTIONS)}")
    out = Path(args.out) / ("quick" if args.quick else "")
    out.mkdir(parents=True, exist_ok=True)
    head = {"machine": machine(), "quick": args.quick, "matmul": matmul_peak()}
    peak = max(head["matmul"].values())
    print(f"{head['machine']}\nfp32 matmul 4096^2: XLA {head['matmul']['xla']:.0f} GFLOP/s, "
          f"PyTorch {head['matmul']['torch']:.0f} GFLOP/s", flush=True)
    reps = 3 if args.quick else 5
    for section in sections:  # each section writes its own file: a partial re-run replaces
        t0 = time.time()      # only what it measured
        if section in ("vgg-mini", "vgg16", "resnet50"):
            print(f"\n{TABLE_HEAD}", flush=True)
            result, name = {"rows": bench_attribution(section, reps, args.quick, peak)}, \
                f"attribution-{section}"
        elif section == "relevance":
            print("\n| model | method | peer | N | ours ms/img | peer ms/img | speed-up | "
                  "ours 1st call s |\n|---|---|---|---|---|---|---|---|", flush=True)
            result, name = {"rows": bench_relevance(reps, args.quick)}, "relevance"
        elif section == "peers":
            from bench_peers import bench_peers

            print("\n| model | method | peer | N | ours s/img | peer s/img | speed-up | "
                  "ours 1st call s |\n|---|---|---|---|---|---|---|---|", flush=True)
            result, name = {"rows": bench_peers(setup, args.quick)}, "peers"
        elif section == "vit":
            from bench_vit import bench_vit

            print("\n| model | method | reference | N | ours s/img | reference s/img | speed-up | "
                  "ours 1st call s | max diff |\n|---|---|---|---|---|---|---|---|---|", flush=True)
            result, name = {"rows": bench_vit(args.quick)}, "vit"
        elif section == "optvis":
            result, name = bench_optvis(args.quick), "optvis"
        elif section == "optimize":
            from bench_optimize import bench_optimize

            result, name = {"rows": bench_optimize(setup, args.quick)}, "optimize"
        elif section == "runs":
            from bench_runs import bench_runs

            result, name = {"rows": bench_runs(setup, args.quick)}, "runs"
        elif section == "concepts":
            from bench_concepts import bench_concepts

            result, name = {"rows": bench_concepts(setup, args.quick)}, "concepts"
        elif section == "style":
            from bench_optimize import bench_style

            result, name = {"rows": bench_style(setup, args.quick)}, "style"
        elif section == "scaling":
            result, name = bench_scaling(args.quick), "scaling"
            plot_scaling(result, out / "scaling.png")
        elif section == "options":
            result, name = {"rows": bench_options(reps)}, "options"
        elif section == "cli":
            from bench_cli import bench_cli

            result, name = {"rows": bench_cli(setup, args.quick)}, "cli"
        else:
            result, name = {"rows": bench_checks(reps)}, "checks"
        result = {**head, **result, "seconds": time.time() - t0}
        (out / f"{name}.json").write_text(json.dumps(result, indent=1))
    (out / "tables.md").write_text(tables(out) + "\n")
    print(f"\ndone -> {out}")


if __name__ == "__main__":
    main()
