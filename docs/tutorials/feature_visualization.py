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
# # Feature visualization at small size
#
# Activation maximization with Lucid's recipe (FFT parameterization, decorrelated colour,
# standard transforms, Adam 0.05) on the shipped vgg-mini — at 64 px and 64 steps instead of
# Lucid's 128 px and 512, so that it runs in well under a minute on a 2-core CPU. The whole
# optimization is one compiled `lax.scan`; many units render in one vmapped call.

# %%
import pathlib

import jax
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

import jaxinterp as ji

FIGURES = pathlib.Path("figures")  # scripts/run_tutorials.py runs this file from docs/tutorials/
FIGURES.mkdir(exist_ok=True)
O = ji.objectives
m = ji.load_model()

# %% [markdown]
# ## Every class in one call
#
# `ji.optvis.units(m, "logits")` makes one objective per class logit; `visualize_units` renders
# them together (a leading unit axis on every result).

# %%
r = ji.visualize_units(m, ji.optvis.units(m, "logits"), size=64, steps=64,
                       key=jax.random.key(0))
images = r.images[:, 0]  # [8 classes, 64, 64, 3]
print(images.shape, "objective first/last step:", np.asarray(r.scores[:, [0, -1], 0]).round(1).tolist())

# %% [markdown]
# Fed back to the network, each image should be classified as the class it was made for:

# %%
probs = jax.nn.softmax(m(images)[0])
for c, name in enumerate(m.classes):
    print(f"{name:9s} p({name}) = {float(probs[c, c]):.2f}")

# %%
def show_row(imgs, titles, path):
    fig, axes = plt.subplots(1, len(imgs), figsize=(1.4 * len(imgs), 1.6))
    for ax, im, t in zip(axes, imgs, titles):
        ax.imshow(np.asarray(im))
        ax.set_title(t, fontsize=7)
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=80)


show_row(images, m.classes, FIGURES / "fv_classes.png")

# %% [markdown]
# ![Class visualizations of vgg-mini](figures/fv_classes.png)
#
# ## Channels of an inner layer
#
# The same for 8 channels of `relu3_2` (objective: the channel's spatial mean). Objectives are
# pytrees whose leaves are the indices, so another channel does not recompile.

# %%
r = ji.visualize_units(m, ji.optvis.units(m, "relu3_2", channels=range(8)), size=64, steps=64,
                       key=jax.random.key(1))
show_row(r.images[:, 0], [f"relu3_2:{c}" for c in range(8)], FIGURES / "fv_relu3_2.png")

# %% [markdown]
# ![Eight channels of relu3_2](figures/fv_relu3_2.png)
#
# ## Composing objectives
#
# Objectives combine with `+`, `-` and `*` by numbers and print as written. A channel, plus
# diversity across a batch, minus a little total variation — rendered the same way with
# `ji.visualize(m, obj, batch=4, key=...)` (left out here to keep the tutorial short: every new
# objective structure is one more compilation):

# %%
obj = O.channel("relu4_2", 9) + 5 * O.diversity("relu4_2") - 1e-3 * O.total_variation()
print(obj)

# %% [markdown]
# The [feature visualization page](../feature-visualization.md) has the full-size gallery
# (128 px, 512 steps; diversity and directions included) and every option.
