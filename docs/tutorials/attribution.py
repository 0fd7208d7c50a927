# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Attribution on the shipped vgg-mini
#
# Load the embedded default model (no download), draw a few held-out `shapes` images, and
# compare five attribution methods — with a check against the pixel labels that `shapes` ships.
# Runs in about half a minute on a 2-core CPU (most of it compilation).

# %%
import pathlib

import jax
import jax.numpy as jnp
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

import jaxinterp as ji

FIGURES = pathlib.Path("figures")  # scripts/run_tutorials.py runs this file from docs/tutorials/
FIGURES.mkdir(exist_ok=True)

m = ji.load_model()  # vgg-mini, trained on shapes, shipped with the package
print(m.classes, m.input_size)
print(m.layers[:6], "...")

# %% [markdown]
# The images come from the held-out seed (never used in training); each has a label, an object
# mask and colour / texture maps.

# %%
b = ji.data.shapes(jax.random.key(1_000_003), 6)
x, y = b.images, b.labels
logits, feats = m(x)
probs = jax.nn.softmax(logits)
for i in range(len(y)):
    p = int(jnp.argmax(logits[i]))
    print(f"image {i}: true {m.classes[int(y[i])]:9s} predicted {m.classes[p]:9s} "
          f"p={float(probs[i, p]):.2f}")

# %% [markdown]
# Every method is a pure function `(model, x, target, ...) -> array`; the multi-pass ones take
# `key=` and `batch_size=` (SmoothGrad, for one: `ji.smooth_grad(m, x, y, samples=50,
# key=jax.random.key(0))`). Sizes are kept small here (16 IG steps).

# %%
maps = {
    "saliency": ji.saliency(m, x, y, abs=True),
    "guided_backprop": ji.guided_backprop(m, x, y),
    "grad_cam": ji.grad_cam(m, x, y),
    "integrated_gradients": ji.integrated_gradients(m, x, y, steps=16),
    "occlusion": ji.occlusion(m, x, y, window=(16, 16), stride=(8, 8)),
}
for name, a in maps.items():
    print(f"{name:22s} {tuple(a.shape)}")

# %% [markdown]
# Pixel maps (`[N, H, W, 3]`) and heat maps (`[N, H, W]`) go through `ji.viz`: here the
# gray heat map (max |·| over channels, percentile clip) and `overlay` on the image.

# %%
def heat(a):
    a = np.asarray(a)
    return ji.viz.gray_heatmap(a) if a.ndim == 4 else np.maximum(a, 0) / (
        np.maximum(a, 0).max(axis=(1, 2), keepdims=True) + 1e-12)


names = list(maps)
fig, axes = plt.subplots(len(y), len(names) + 1, figsize=(1.6 * (len(names) + 1), 1.6 * len(y)))
for i in range(len(y)):
    axes[i, 0].imshow(np.asarray(x[i]))
    axes[i, 0].set_ylabel(m.classes[int(y[i])], fontsize=8)
    for j, name in enumerate(names):
        axes[i, j + 1].imshow(ji.viz.overlay(np.asarray(x[i]), heat(maps[name])[i], alpha=0.6))
for j, title in enumerate(["image", *names]):
    axes[0, j].set_title(title, fontsize=7)
for ax in axes.flat:
    ax.set_xticks([])
    ax.set_yticks([])
fig.tight_layout()
fig.savefig(FIGURES / "attribution_methods.png", dpi=80)

# %% [markdown]
# ![Five methods on six held-out shapes images](figures/attribution_methods.png)
#
# ## Checked against the object mask
#
# `shapes` knows where the object is, so a heat map can be scored: does its maximum fall on the
# object (the pointing game), and what share of |attribution| lies inside it? (The full
# evaluation on 500 images is on the [ground-truth page](../attribution/ground-truth.md).)

# %%
mask = np.asarray(b.mask)
for name, a in maps.items():
    h = heat(a)
    top = h.reshape(len(y), -1).argmax(1)
    pointing = mask.reshape(len(y), -1)[np.arange(len(y)), top].mean()
    inside = (h * mask).sum((1, 2)) / (h.sum((1, 2)) + 1e-12)
    print(f"{name:22s} pointing {pointing:5.0%}   mass inside {inside.mean():5.0%}")

# %% [markdown]
# ## Targets beyond classes
#
# A target can be a class index per image, or any callable `(logits, feats) -> [N]` scores —
# for example one channel of an inner layer, `ji.targets.unit`:

# %%
unit = ji.saliency(m, x, ji.targets.unit("conv4_2", 5))
print("gradient of channel 5 of conv4_2:", unit.shape, float(jnp.abs(unit).max()))
