"""The `concepts` section of scripts/bench.py: `ji.dissect` against NetDissect-Lite's loop.

The peer's loop (NetDissect-Lite `feature_operation.py`): features computed in PyTorch and kept
for the data set, a per-unit threshold from all of them (`np.quantile`; the peer's approximate
QuantileVector is faster but not exact), then Lite's `tally_job` and `tally` as transcribed in
tests/netdissect_lite.py: per image and per unit, the map upsampled bilinearly to the label size
(PIL, as `scipy.misc.imresize` did), thresholded, and `np.bincount` of the label maps at the
mask's pixels. It keeps every activation, so it is measured on fewer images and its time per
image reported; it is linear in the images."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import jax
import numpy as np

LAYERS = ("relu1_1", "relu2_2", "relu3_2", "relu4_2")


def peer_dissect(tm, d, layer_indices, quantile=0.005):
    """NetDissect-Lite's loop on a `Shapes` batch; returns IoU [units, concepts] per layer."""
    import netdissect_lite  # tests/: the transcription of Lite's tally_job / tally
    import torch
    from PIL import Image

    x = torch.from_numpy(np.ascontiguousarray(np.asarray(d.images).transpose(0, 3, 1, 2)))
    feats = {}
    with torch.no_grad():
        for s in range(0, len(x), 64):
            _, f = tm.net((x[s:s + 64] - tm.mean) / tm.std)
            for i in layer_indices:
                feats.setdefault(i, []).append(f[f"features.{i}"].numpy())
    pixels, labelcat = netdissect_lite.label_maps(d)

    def imresize(feature_map, shape, img, unit):  # scipy.misc.imresize(mode='F') was PIL's
        return np.asarray(Image.fromarray(feature_map.astype(np.float32), mode="F")
                          .resize(shape[::-1], Image.BILINEAR))

    out = {}
    for i in layer_indices:
        f = np.concatenate(feats[i])  # [n, units, h, w]
        units = f.shape[1]
        threshold = np.quantile(f.transpose(1, 0, 2, 3).reshape(units, -1), 1 - quantile, axis=1)
        out[i] = netdissect_lite.tally(f, threshold, pixels, labelcat, imresize)[:, 1:]
    return out


def ours_rss(n: int, in_memory: bool = False) -> dict:
    """Dissects n images in a fresh process: seconds and peak RSS (MB). Streamed: the images
    are generated in each of the three passes (generation and compilation timed too);
    `in_memory`: generated once before the clock starts, as the peer's are, and the second
    call timed (compiled)."""
    code = f"""
import json, resource, time, jax, jaxinterp as ji
m = ji.load_model()
def stream():
    for s in range(0, {n}, 128):
        yield ji.data.shapes(jax.random.key(1_000_003), min(128, {n} - s), start=100_000 + s)
data = list(stream()) if {in_memory} else stream
t = time.perf_counter()
ji.dissect(m, {list(LAYERS)!r}, data)
first = time.perf_counter() - t
if {in_memory}:  # a second call: compiled programs reused
    t = time.perf_counter()
    ji.dissect(m, {list(LAYERS)!r}, data)
print(json.dumps({{"seconds": time.perf_counter() - t, "first_seconds": first,
                   "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}}))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def torch_default_model():
    """The shipped vgg-mini and the same weights in the plain-torch VGG (for the peer's loop)."""
    import torch

    import jaxinterp as ji
    from jaxinterp.models.vgg import param_name
    from torch_vgg import Normalized, TorchVGG

    m = ji.load_model()
    net = TorchVGG("vgg-mini", num_classes=8, batch_norm=True)
    state = {}
    for s in m.specs:
        p = m.variables["params"].get(param_name(s.name)) if s.kind in ("conv", "dense") else None
        if s.kind == "conv":
            state[f"{s.name}.weight"] = np.asarray(p["kernel"]).transpose(3, 2, 0, 1)
            state[f"{s.name}.bias"] = np.asarray(p["bias"])
        elif s.kind == "bn":
            bp = m.variables["params"][param_name(s.name)]
            bs = m.variables["batch_stats"][param_name(s.name)]
            state[f"{s.name}.weight"], state[f"{s.name}.bias"] = np.asarray(bp["scale"]), np.asarray(bp["bias"])
            state[f"{s.name}.running_mean"] = np.asarray(bs["mean"])
            state[f"{s.name}.running_var"] = np.asarray(bs["var"])
            state[f"{s.name}.num_batches_tracked"] = np.asarray(0)
        elif s.kind == "dense":
            state[f"{s.name}.weight"] = np.asarray(p["kernel"]).T
            state[f"{s.name}.bias"] = np.asarray(p["bias"])
    net.load_state_dict({k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in state.items()},
                        strict=True)
    tm = Normalized(net, m.preprocess.mean, m.preprocess.std).eval()
    return m, tm


def bench_concepts(setup, quick) -> list[dict]:
    """Dissection throughput: ours on 2k and 10k streamed images (fresh processes, peak RSS),
    the peer's loop on a few hundred, same shipped vgg-mini weights on both sides."""
    import jaxinterp as ji

    sizes = (1000, 2000) if quick else (2000, 10000)
    ours = {(n, False): ours_rss(n) for n in sizes}
    ours[sizes[0], True] = ours_rss(sizes[0], in_memory=True)
    for (n, mem), r in ours.items():
        print(f"ours {n} images{' in memory' if mem else ''}: {r}", flush=True)
    m, tm = torch_default_model()
    n_peer = 100 if quick else 300
    d = ji.data.shapes(jax.random.key(1_000_003), n_peer, start=100_000)
    idx = [int(m.resolve(layer).split(".")[1]) for layer in LAYERS]
    t = time.perf_counter()
    theirs = peer_dissect(tm, d, idx)
    t_peer = time.perf_counter() - t
    mine = ji.dissect(m, list(LAYERS), d)
    agree = float(np.mean([np.abs(mine[layer].ious - theirs[i]).max() for layer, i in
                           zip(LAYERS, idx)]))
    rows = [{"side": "ours, images in memory (second call)" if mem else "ours, streamed "
             "(generated in each pass)", "images": n, "seconds": r["seconds"], "images_per_s": n / r["seconds"],
             "peak_mb": r["peak_mb"]} for (n, mem), r in ours.items()]
    rows.append({"side": "NetDissect-Lite-style loop", "images": n_peer, "seconds": t_peer,
                 "images_per_s": n_peer / t_peer, "peak_mb": None,
                 "max_iou_difference_vs_ours": agree})
    for r in rows:
        r["speedup"] = r["images_per_s"] / rows[-1]["images_per_s"]
        print(r, flush=True)
    return rows
