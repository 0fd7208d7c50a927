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
# # Your own Flax model
#
# Every jaxinterp method takes a model object: the shipped VGGs, or whatever `ji.wrap` makes of
# a Flax linen module with its variables, an NNX module, or a plain `fn(params, x) -> logits`.
# Here: a small linen CNN, attributed with
# Grad-CAM at a named layer, guided backprop (its ReLUs rewritten in the traced jaxpr — no
# hooks) and LRP.

# %%
import pathlib

import flax.linen as nn
import jax
import jax.numpy as jnp
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

import jaxinterp as ji

FIGURES = pathlib.Path("figures")  # scripts/run_tutorials.py runs this file from docs/tutorials/
FIGURES.mkdir(exist_ok=True)


class CNN(nn.Module):
    @nn.compact
    def __call__(self, x):
        x = nn.relu(nn.Conv(16, (3, 3), name="conv1")(x))
        x = nn.max_pool(x, (2, 2), (2, 2))
        x = jnp.maximum(nn.Conv(32, (3, 3), name="conv2")(x), 0)  # any ReLU spelling
        x = nn.max_pool(x, (2, 2), (2, 2))
        x = nn.relu(nn.Conv(32, (3, 3), name="conv3")(x))
        return nn.Dense(8, name="fc")(x.mean((1, 2)))


# %% [markdown]
# ## Wrapping it
#
# `ji.wrap(module, variables, input_size=..., classes=...)` gives a model whose layers are named
# from the module tree. The network here is freshly initialized — training it is ordinary
# Flax/optax code and changes nothing below: the calls are the same for any weights. (The
# shipped, trained model is vgg-mini; see the [attribution tutorial](attribution.md).)

# %%
model = CNN()
variables = model.init(jax.random.key(1), jnp.zeros((1, 64, 64, 3)))
m = ji.wrap(model, variables, input_size=(64, 64), classes=list(ji.data.CLASSES))
print(m.layers)

test = ji.data.shapes(jax.random.key(1_000_003), 6)
logits, feats = m(test.images)  # like any jaxinterp model: logits and every layer's output
print(logits.shape, {k: v.shape for k, v in feats.items()})

# %% [markdown]
# ## Attribution on the wrapped model

# %%
x, y = test.images[:6], test.labels[:6]
maps = {
    "grad_cam (conv3)": np.asarray(ji.grad_cam(m, x, y, layer="conv3")),
    "guided_backprop": ji.viz.gray_heatmap(np.asarray(ji.guided_backprop(m, x, y))),
    "lrp (epsilon_plus_flat)": ji.viz.gray_heatmap(np.asarray(ji.lrp(m, x, y))),
}
for name, a in maps.items():
    print(f"{name:24s} {a.shape}")
fig, axes = plt.subplots(len(y), len(maps) + 1, figsize=(1.8 * (len(maps) + 1), 1.6 * len(y)))
for i in range(len(y)):
    axes[i, 0].imshow(np.asarray(x[i]))
    axes[i, 0].set_ylabel(m.classes[int(y[i])], fontsize=8)
    for j, (name, a) in enumerate(maps.items()):
        h = np.maximum(a[i], 0) / (np.maximum(a[i], 0).max() + 1e-12)
        axes[i, j + 1].imshow(ji.viz.overlay(np.asarray(x[i]), h, alpha=0.6))
for j, title in enumerate(["image", *maps]):
    axes[0, j].set_title(title, fontsize=7)
for ax in axes.flat:
    ax.set_xticks([])
    ax.set_yticks([])
fig.tight_layout()
fig.savefig(FIGURES / "wrapped_attribution.png", dpi=80)

# %% [markdown]
# ![Grad-CAM, guided backprop and LRP on the wrapped CNN](figures/wrapped_attribution.png)
#
# The ReLUs the rewrite replaces can be counted: both spellings above (`nn.relu` and
# `jnp.maximum(x, 0)`) are found.

# %%
print("ReLUs found:", ji.rules.count_relus(jax.make_jaxpr(lambda v: model.apply(v, x))(
    variables)))

# %% [markdown]
# More — NNX modules, plain functions, layer naming, ResNet — on
# [Your own model and ResNet](../own-model.md).
