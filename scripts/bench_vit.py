"""The `vit` section of scripts/bench.py: the transformer methods on ViT-B/16 at 4x224x224
against their reference code on identical (seeded, random) weights.

- attention rollout and Chefer et al.'s CVPR 2021 / ICCV 2021 relevance against the
  transcription of Chefer's code in tests/torch_vit.py (one image per call, as his
  `ViT_explanation_generator.py`: the 4 images in a loop);
- AttnLRP and CP-LRP against LXT 2.1's own patch functions on the torch twin, the batch of 4
  in one backward pass (LXT's Gradient*Input recipe).

Each row: the first call of each side (ours: compilation included), then interleaved timed
calls; medians in seconds per image; speed-up = peer / ours; the outputs' largest difference
relative to the reference's largest value.
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import jax
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # the torch twin, LXT

import jaxinterp as ji  # noqa: E402

ARCH, N = "vit_b_16", 4


def _timed(f):
    t0 = time.perf_counter()
    out = f()
    return time.perf_counter() - t0, out


def _pairs(jm, tm, x, t):
    import torch
    from torch_vit import chefer, lxt_gradient_x_input, lxt_patched

    xt = torch.from_numpy(np.ascontiguousarray(x)).permute(0, 3, 1, 2)
    grid = x.shape[1] // jm.apply.module.patch_size

    def chefer_all(method):
        return lambda: np.stack([chefer(tm, xt[i:i + 1], int(t[i]), method).numpy()
                                 .reshape(grid, grid) for i in range(len(x))])

    def ours_map(f, **kw):
        return lambda: np.asarray(f(jm, x, t, upsample=False, **kw))

    def rollout_reference():  # Chefer's `generate_rollout`: a forward pass per image, no backward
        from torch_vit import compute_rollout_attention

        out = []
        records = tm.net.recording(True)
        try:
            for i in range(len(x)):
                with torch.no_grad():
                    tm(xt[i:i + 1])
                mats = [rec["a"].sum(dim=1) / rec["a"].shape[1] for rec in records]
                out.append(compute_rollout_attention(mats)[0, 0, 1:].numpy().reshape(grid, grid))
        finally:
            tm.net.recording(False)
        return np.stack(out)

    pairs = {
        "attention_rollout": (lambda: np.asarray(ji.attention_rollout(jm, x, upsample=False)),
                              rollout_reference, "Chefer's rollout (transcribed, forward only)"),
        "transformer_attribution (CVPR 2021)": (
            ours_map(ji.transformer_attribution), chefer_all("transformer_attribution"),
            "Chefer's ViT_explanation_generator (transcribed)"),
        "transformer_attribution (ICCV 2021)": (
            ours_map(ji.transformer_attribution, variant="iccv2021"), chefer_all("iccv2021"),
            "Chefer's ICCV 2021 notebook (transcribed)"),
    }
    xn = (xt - torch.tensor(jm.preprocess.mean).reshape(1, 3, 1, 1)) / \
        torch.tensor(jm.preprocess.std).reshape(1, 3, 1, 1)
    for composite in ("attn_lrp", "cp_lrp"):
        patched = lxt_patched(tm.net, composite)
        pairs[f"lrp ({composite})"] = (
            lambda c=composite: np.asarray(ji.lrp(jm, x, t, composite=c, start="logit")),
            lambda p=patched: lxt_gradient_x_input(p, xn, t)[0].permute(0, 2, 3, 1).numpy(),
            "LXT 2.1 efficient patches")
    return pairs


def bench_vit(quick, arch=ARCH, n=N) -> list[dict]:
    """One row per method (see the module docstring)."""
    import torch
    from torch_vit import export_vit, seeded_vit

    reps = 2 if quick else 3
    net = seeded_vit(arch, 0, num_classes=1000, sharpness=1.0)
    with tempfile.TemporaryDirectory() as d:
        jm, tm = export_vit(net, arch, Path(d) / "w.safetensors")
    size = jm.apply.module.image_size
    x = np.random.default_rng(0).random((n, size, size, 3), dtype=np.float32)
    with torch.no_grad():
        logits = tm(torch.from_numpy(x).permute(0, 3, 1, 2)).numpy()
    t = np.argsort(-logits, 1)[:, 1].copy()  # the runner-up class
    rows = []
    for name, (ours, theirs, peer) in _pairs(jm, tm, x, t).items():
        with torch.enable_grad():
            first_ours, a = _timed(ours)
            first_theirs, b = _timed(theirs)
            times = [[], []]
            for _ in range(reps):
                times[0].append(_timed(ours)[0])
                times[1].append(_timed(theirs)[0])
        med = [statistics.median(v) for v in times]
        diff = float(np.abs(np.asarray(a) - np.asarray(b)).max() / np.abs(b).max())
        row = {"arch": arch, "method": name, "peer": peer, "n": n, "reps": reps,
               "ours_s": med[0] / n, "peer_s": med[1] / n, "speedup": med[1] / med[0],
               "ours_first_s": first_ours, "peer_first_s": first_theirs,
               "max_rel_diff": diff, "threads": os.cpu_count(), "jax": jax.__version__}
        rows.append(row)
        print(f"| {arch} | {name} | {peer} | {n} | {row['ours_s']:.2f} | {row['peer_s']:.2f} | "
              f"**{row['speedup']:.2f}x** | {first_ours:.1f} | {diff:.1e} |", flush=True)
    return rows
