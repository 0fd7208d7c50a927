"""Feature space: nearest neighbours (chunked, no N x N matrix) and 2-D maps (PCA, t-SNE, UMAP)."""

from __future__ import annotations

import warnings
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from jaxinterp._xla import tuned_jit
from jaxinterp.checks import as_key, check_count, check_images
from jaxinterp.concepts.data import batches, images_of, layer_output

METRICS = ("l2", "cosine")
METHODS = ("pca", "tsne", "umap")
TSNE_BACKENDS = ("auto", "opentsne", "sklearn")


@tuned_jit(static_argnames=("name",))
def _codes(m, x, name):
    return layer_output(m, x, name).reshape(x.shape[0], -1)


def features(m, layer: str, data: Any, *, batch_size: int = 64,
             progress: Callable | None = None) -> np.ndarray:
    """Every image's flattened `layer` output, `[N, D]` (streamed over `data`'s batches)."""
    name = m.resolve(layer)
    wrap = progress or (lambda it, desc: it)
    out = [np.asarray(_codes(m, jnp.asarray(images_of(b)), name))
           for b in wrap(batches(data, batch_size)(), "features")]
    if not out:
        raise ValueError("data holds no images")
    return np.concatenate(out)


@tuned_jit(static_argnames=("name", "k", "metric"))
def _merge(m, x, q, offset, best, name, k, metric):
    f = _codes(m, x, name)
    if metric == "cosine":
        f = f / jnp.maximum(jnp.linalg.norm(f, axis=1, keepdims=True), 1e-12)
        d = 1.0 - q @ f.T
    else:
        d = jnp.sqrt(jnp.maximum((q * q).sum(1)[:, None] - 2 * q @ f.T + (f * f).sum(1)[None], 0))
    dist = jnp.concatenate([best[0], d], 1)
    index = jnp.concatenate([best[1], jnp.broadcast_to(offset + jnp.arange(f.shape[0]), d.shape)],
                            1)
    neg, order = jax.lax.top_k(-dist, k)
    return -neg, jnp.take_along_axis(index, order, 1)


def nearest_neighbors(m, layer: str, queries: jax.Array, data: Any, *, k: int = 5,
                      metric: str = "l2", batch_size: int = 64,
                      progress: Callable | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The k images of `data` closest to each query in `layer`'s feature space.

    Chunked over the data with a running top-k: memory is queries x (k + batch), never N x N.

    Args:
      m: the model.
      layer: layer name or alias (its output is flattened).
      queries: query images `[Q, H, W, 3]` in [0, 1].
      data: a `Shapes` batch, an image array, a list of either, or a function returning a fresh
        iterator of them.
      k: neighbours per query.
      metric: "l2" (Euclidean distance) or "cosine" (1 − cosine similarity).
      batch_size: images per compiled call when `data` is one batch or array.
      progress: wraps the pass's iterator, `progress(iterator, desc)`.
    Returns:
      `(indices [Q, k], distances [Q, k])`, nearest first; indices in the data's order.
    """
    if metric not in METRICS:
        raise ValueError(f"metric must be one of {', '.join(METRICS)}, got {metric!r}")
    check_count(k, "k", 1)
    name = m.resolve(layer)
    queries = check_images(queries, "queries", m.min_size)
    q = _codes(m, queries, name)
    if metric == "cosine":
        q = q / jnp.maximum(jnp.linalg.norm(q, axis=1, keepdims=True), 1e-12)
    best = (jnp.full((q.shape[0], k), jnp.inf), jnp.full((q.shape[0], k), -1, jnp.int32))
    count = 0
    wrap = progress or (lambda it, desc: it)
    for b in wrap(batches(data, batch_size)(), "neighbours"):
        x = jnp.asarray(images_of(b))
        best = _merge(m, x, q, count, best, name, k, metric)
        count += x.shape[0]
    if count < k:
        raise ValueError(f"k={k} is larger than the data ({count} images)")
    return np.asarray(best[1]), np.asarray(best[0])


@jax.jit
def pca(feats: jax.Array) -> jax.Array:
    """The first two principal components of `[N, D]` features, `[N, 2]` (signs fixed so that
    each component's largest-magnitude loading is positive)."""
    x = feats - feats.mean(0)
    _, _, vt = jnp.linalg.svd(x, full_matrices=False)
    v = vt[:2]
    v = v * jnp.sign(jnp.take_along_axis(v, jnp.abs(v).argmax(1)[:, None], 1))
    return x @ v.T


def embed_2d(feats: Any, *, method: str = "pca", key: jax.Array | int | None = None,
             perplexity: float = 30.0, backend: str = "auto") -> np.ndarray:
    """A 2-D map of features `[N, D]` (e.g. `features(m, "fc7", data)`), `[N, 2]`.

    Args:
      feats: the features.
      method: "pca" (in JAX), "tsne" (seeded from `key`; see `backend`) or "umap" (umap-learn).
        t-SNE and UMAP are the optional extra `pip install "jaxinterp[concepts]"`.
      key: PRNG key or int seed for t-SNE / UMAP (default 0); the same key and backend give the
        same map.
      perplexity: t-SNE's perplexity (30, scikit-learn's default). At most (N − 1) / 3 points
        fit (openTSNE's bound): a larger value is lowered to that, with a warning.
      backend: t-SNE's implementation: "opentsne" (openTSNE's `TSNE(perplexity, random_state,
        n_jobs=1)`), "sklearn" (scikit-learn's `TSNE(perplexity, init="pca", random_state)`),
        or "auto" (default: openTSNE if installed, else scikit-learn). The two give different
        maps for the same key, so pin one where maps must repeat across machines. A backend
        that is not installed raises ImportError.
    Returns:
      The 2-D coordinates.
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {', '.join(METHODS)}, got {method!r}")
    if backend not in TSNE_BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(TSNE_BACKENDS)}, got {backend!r}")
    feats = np.asarray(feats, np.float32)
    if feats.ndim != 2 or len(feats) < 3:
        raise ValueError(f"feats must be [N, D] with N >= 3, got shape {feats.shape}")
    if method == "pca":
        return np.asarray(pca(jnp.asarray(feats)))
    seed = int(jax.random.randint(as_key(key), (), 0, 2 ** 31 - 1))
    if method == "umap":
        try:
            import umap
        except ImportError:
            raise ImportError("method='umap' needs umap-learn: pip install umap-learn") from None
        return np.asarray(umap.UMAP(random_state=seed).fit_transform(feats))
    bound = (len(feats) - 1) / 3
    if perplexity > bound:
        warnings.warn(f"perplexity {perplexity:g} is too large for {len(feats)} points; using "
                      f"{bound:g} ((N - 1) / 3)", stacklevel=2)
        perplexity = bound
    if backend in ("auto", "opentsne"):
        try:
            from openTSNE import TSNE
        except ImportError:
            if backend == "opentsne":
                raise ImportError("backend='opentsne' needs openTSNE: pip install openTSNE (or "
                                  "backend='sklearn')") from None
        else:
            return np.asarray(TSNE(perplexity=perplexity, random_state=seed, n_jobs=1).fit(feats),
                              np.float32)
    try:
        from sklearn.manifold import TSNE
    except ImportError:
        if backend == "sklearn":
            raise ImportError("backend='sklearn' needs scikit-learn: pip install scikit-learn "
                              "(or backend='opentsne')") from None
        raise ImportError("method='tsne' needs openTSNE or scikit-learn: pip install "
                          "\"jaxinterp[concepts]\" (or pip install scikit-learn)") from None
    return TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed
                ).fit_transform(feats).astype(np.float32)
