"""The `peers` section of scripts/bench.py: the peers' slow methods against their own code, on
identical VGG16 weights at 224x224 (1 image per call: each call is hundreds of VGG16 passes).

- Score-CAM (`features.29`, 512 channels, chunks of 16 on both sides) against pytorch-grad-cam's
  `ScoreCAM` (its own post-processing, so the two outputs are compared too);
- KernelSHAP with 200 samples on the default 8x8 patch grid against Captum's `KernelShap`
  (`perturbations_per_eval=16` on both sides; Captum's default is 1);
- XRAI (IG from the min / max baselines, 100 steps each, Felzenszwalb segments at 6 scales,
  "full" greedy selection) against PAIR's `saliency.core.XRAI` with a PyTorch gradient as its
  call_model_function (`batch_size=10` on both sides).

Each row: the first call of each side (ours: compilation included), then one more call of each,
timed (each call is minutes of VGG16 passes on 2 cores); seconds per image; speed-up = peer /
ours (of the second calls).
"""

from __future__ import annotations

import os
import statistics
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # the peers' shims

import jaxinterp as ji  # noqa: E402

SCORE_CAM_CHUNK, SHAP_SAMPLES, SHAP_CHUNK, XRAI_CHUNK = 16, 200, 16, 10


def _timed(f):
    t0 = time.perf_counter()
    f()
    return time.perf_counter() - t0


def _nchw(x):
    import torch

    return torch.from_numpy(np.ascontiguousarray(x)).permute(0, 3, 1, 2)


def score_cam_pair(jm, tm, net, x, t, layer):
    from gradcam_shim import import_gradcam

    pgc = import_gradcam()
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    lyr = net.features[int(layer.split(".")[1])]
    out = {}

    def ours():
        out["ours"] = np.asarray(jax.block_until_ready(ji.score_cam(
            jm, x, t, layer, batch_size=SCORE_CAM_CHUNK, postprocess="pytorch_grad_cam")))

    def theirs():
        cam = pgc.ScoreCAM(model=tm, target_layers=[lyr])
        cam.batch_size = SCORE_CAM_CHUNK
        try:
            out["theirs"] = cam(_nchw(x), targets=[ClassifierOutputTarget(int(c)) for c in t])
        finally:
            cam.activations_and_grads.release()

    def agreement():
        return float(np.abs(out["ours"] - out["theirs"]).max() / np.abs(out["theirs"]).max())

    return ours, theirs, agreement


def kernel_shap_pair(jm, tm, net, x, t, layer):
    import torch
    from captum.attr import KernelShap

    size = x.shape[1]
    patch = size // 8
    mask = np.asarray(ji.attribution.feature_masks.patch_mask((size, size), patch))
    tmask = torch.from_numpy(mask.astype(np.int64)).reshape(1, 1, size, size)
    key = jax.random.key(0)

    def ours():
        jax.block_until_ready(ji.kernel_shap(jm, x, t, patch=patch, samples=SHAP_SAMPLES, key=key,
                                             batch_size=SHAP_CHUNK))

    def theirs():
        KernelShap(tm).attribute(_nchw(x), target=torch.from_numpy(t), feature_mask=tmask,
                                 baselines=0.0, n_samples=SHAP_SAMPLES,
                                 perturbations_per_eval=SHAP_CHUNK)

    return ours, theirs, None


def xrai_pair(jm, tm, net, x, t, layer):
    import torch
    from saliency.core import INPUT_OUTPUT_GRADIENTS, XRAI

    def call_model(batch, call_model_args=None, expected_keys=None):
        i = _nchw(np.asarray(batch, np.float32)).requires_grad_(True)
        score = tm(i)[:, call_model_args["class"]].sum()
        (g,) = torch.autograd.grad(score, i)
        return {INPUT_OUTPUT_GRADIENTS: g.permute(0, 2, 3, 1).numpy()}

    def ours():
        jax.block_until_ready(ji.xrai(jm, x, t, batch_size=XRAI_CHUNK))

    def theirs():
        for xi, c in zip(x, t):
            XRAI().GetMask(xi, call_model, call_model_args={"class": int(c)},
                           batch_size=XRAI_CHUNK)

    return ours, theirs, None


PAIRS = {"score_cam": (score_cam_pair, "pytorch-grad-cam ScoreCAM"),
         "kernel_shap": (kernel_shap_pair, f"Captum KernelShap ({SHAP_SAMPLES} samples)"),
         "xrai": (xrai_pair, "PAIR saliency XRAI")}


def bench_peers(setup, quick, n=1) -> list[dict]:
    """One row per method of PAIRS (see the module docstring)."""
    import torch

    reps = 1
    jm, tm, net, x, t, layer = setup("vgg16", n)
    rows = []
    for name, (make, peer) in PAIRS.items():
        ours, theirs, agreement = make(jm, tm, net, x, t, layer)
        with torch.enable_grad():
            first = [_timed(ours), _timed(theirs)]
            times = [[], []]
            for _ in range(reps):
                times[0].append(_timed(ours))
                times[1].append(_timed(theirs))
        med = [statistics.median(s) for s in times]
        row = {"arch": "vgg16", "method": name, "peer": peer, "n": n, "reps": reps,
               "ours_s": med[0] / n, "peer_s": med[1] / n, "speedup": med[1] / med[0],
               "ours_first_s": first[0], "peer_first_s": first[1],
               "max_rel_diff": agreement() if agreement else None,
               "threads": os.cpu_count()}
        rows.append(row)
        print(f"| vgg16 | {name} | {peer} | {n} | {row['ours_s']:.1f} | {row['peer_s']:.1f} | "
              f"**{row['speedup']:.2f}x** | {first[0]:.1f} |", flush=True)
    return rows
