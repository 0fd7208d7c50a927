"""Benchmark section `runs`: data-set attribution from a folder of image files.

Per model (vgg-mini on >= 5,000 `shapes` PNGs at 64², VGG16 on >= 200 JPEGs at 224²; saliency,
seeded random weights shared with torch): images/s of `ji.attribute_dataset` (decode on threads,
zarr store, markers) against the same compiled calls on preloaded arrays (how busy the pipeline
keeps the compute), and against Captum's Saliency fed by a PyTorch DataLoader (2 workers) over
the same folder, results gathered in memory.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

import jaxinterp as ji

CASES = {"vgg-mini": {"images": 5000, "batch": 64, "fmt": "png"},
         "vgg16": {"images": 200, "batch": 8, "fmt": "jpg"}}


def write_folder(d: Path, n: int, size: int, fmt: str) -> None:
    from PIL import Image

    for start in range(0, n, 500):
        b = ji.data.shapes(jax.random.key(11), min(500, n - start), start=start, size=size)
        for i, img in enumerate(np.asarray(b.images)):
            a = (img * 255 + 0.5).astype(np.uint8)
            Image.fromarray(a).save(d / f"{start + i:05d}.{fmt}", quality=90)


def torch_loader(d: Path, size: int, batch: int):
    import torch
    from PIL import Image

    class Folder(torch.utils.data.Dataset):
        def __init__(self):
            self.files = sorted(d.iterdir())

        def __len__(self):
            return len(self.files)

        def __getitem__(self, i):
            with Image.open(self.files[i]) as im:
                a = np.asarray(im.convert("RGB").resize((size, size), Image.BILINEAR), np.float32)
            return torch.from_numpy(a / 255.0).permute(2, 0, 1)

    return torch.utils.data.DataLoader(Folder(), batch_size=batch, num_workers=2)


def bench_runs(setup, quick: bool) -> list[dict]:
    import torch
    from captum.attr import Saliency

    rows = []
    for arch, case in CASES.items():
        n = case["images"] // (5 if quick else 1)
        batch = case["batch"]
        jm, tm, net, _, _, _ = setup(arch, 1)
        size = jm.input_size[0]
        with tempfile.TemporaryDirectory() as tmp:
            d = Path(tmp) / "images"
            d.mkdir()
            write_folder(d, n, size, case["fmt"])
            # compile first: the same run on the first batch of files, then time the run
            src = ji.runs.open_source(str(d))
            first = ji.runs.Source("folder", str(d), src.names[:batch], None, None)
            ji.attribute_dataset(jm, first, ["saliency"], Path(tmp) / "warm", batch_size=batch,
                                 metrics=())
            x0 = jnp.zeros((batch, size, size, 3))
            ji.saliency(jm, x0, np.zeros(batch, np.int32)).block_until_ready()
            jax.block_until_ready(ji.runs.attribute._logits(jm, x0))
            start = time.perf_counter()
            s = ji.attribute_dataset(jm, str(d), ["saliency"], Path(tmp) / "run",
                                     batch_size=batch, metrics=(), workers=4)
            pipeline = time.perf_counter() - start
            assert s["complete"] and not s["failed"]
            # the same compiled calls on preloaded arrays
            images = np.stack([ji.images.load_image(d / f, (size, size)) for f in src.names])
            pad = -len(images) % batch
            images = np.concatenate([images, images[:pad]]) if pad else images
            start = time.perf_counter()
            for i in range(0, len(images), batch):
                x = jnp.asarray(images[i:i + batch])
                logits, t = ji.runs.attribute._logits(jm, x)
                np.asarray(ji.saliency(jm, x, t))
                np.asarray(logits)
            preloaded = time.perf_counter() - start
            # Captum with a DataLoader
            torch.set_grad_enabled(True)
            sal = Saliency(tm)
            loader = torch_loader(d, size, batch)
            start = time.perf_counter()
            out = []
            for xb in loader:
                with torch.no_grad():
                    tb = tm(xb).argmax(1)
                out.append(sal.attribute(xb.requires_grad_(True), target=tb, abs=False)
                           .detach().numpy())
            captum = time.perf_counter() - start
        row = {"arch": arch, "images": n, "batch": batch, "format": case["fmt"],
               "pipeline_ips": n / pipeline, "preloaded_ips": n / preloaded,
               "busy": preloaded / pipeline, "captum_ips": n / captum,
               "speedup": captum / pipeline}
        print(row, flush=True)
        rows.append(row)
    return rows
