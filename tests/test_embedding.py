"""t-SNE backends of `ji.embed_2d`: chosen explicitly or by "auto", perplexity bound warned."""

import sys
import types
import warnings

import numpy as np
import pytest

import jaxinterp as ji

FEATS = np.random.default_rng(0).normal(size=(13, 5)).astype(np.float32)


@pytest.fixture
def fake_opentsne(monkeypatch):
    """An installed openTSNE (a stand-in that records its arguments), whatever is installed."""
    calls = []

    class TSNE:
        def __init__(self, **kw):
            calls.append(kw)

        def fit(self, x):
            return np.full((len(x), 2), 7.0)

    monkeypatch.setitem(sys.modules, "openTSNE", types.SimpleNamespace(TSNE=TSNE))
    return calls


@pytest.fixture
def fake_sklearn(monkeypatch):
    """An installed scikit-learn t-SNE (a stand-in: the real one is slow on a busy CPU and is
    run by test_concepts)."""
    calls = []

    class TSNE:
        def __init__(self, **kw):
            calls.append(kw)

        def fit_transform(self, x):
            return np.full((len(x), 2), 3.0)

    monkeypatch.setitem(sys.modules, "sklearn.manifold", types.SimpleNamespace(TSNE=TSNE))
    return calls


@pytest.fixture
def no_opentsne(monkeypatch):
    monkeypatch.setitem(sys.modules, "openTSNE", None)  # import raises ImportError


def test_auto_prefers_opentsne_and_sklearn_can_be_pinned(fake_opentsne, fake_sklearn):
    np.testing.assert_array_equal(ji.embed_2d(FEATS, method="tsne", perplexity=2.0, key=1), 7.0)
    assert fake_opentsne[-1]["perplexity"] == 2.0 and not fake_sklearn
    np.testing.assert_array_equal(
        ji.embed_2d(FEATS, method="tsne", perplexity=2.0, key=1, backend="opentsne"), 7.0)
    np.testing.assert_array_equal(
        ji.embed_2d(FEATS, method="tsne", perplexity=2.0, key=1, backend="sklearn"), 3.0)
    assert len(fake_opentsne) == 2 and fake_sklearn[-1]["perplexity"] == 2.0
    assert fake_sklearn[-1]["init"] == "pca"


def test_auto_falls_back_to_sklearn(no_opentsne, fake_sklearn):
    np.testing.assert_array_equal(ji.embed_2d(FEATS, method="tsne", perplexity=2.0, key=1), 3.0)
    assert len(fake_sklearn) == 1


def test_a_missing_backend_is_a_clear_error(no_opentsne, monkeypatch):
    with pytest.raises(ImportError, match="backend='opentsne' needs openTSNE"):
        ji.embed_2d(FEATS, method="tsne", perplexity=2.0, backend="opentsne")
    monkeypatch.setitem(sys.modules, "sklearn.manifold", None)
    with pytest.raises(ImportError, match="backend='sklearn' needs scikit-learn"):
        ji.embed_2d(FEATS, method="tsne", perplexity=2.0, backend="sklearn")
    with pytest.raises(ImportError, match="openTSNE or scikit-learn"):
        ji.embed_2d(FEATS, method="tsne", perplexity=2.0)
    with pytest.raises(ValueError, match="backend must be one of auto, opentsne, sklearn"):
        ji.embed_2d(FEATS, method="tsne", backend="umap")


def test_perplexity_above_the_bound_is_lowered_with_a_warning(fake_opentsne):
    with pytest.warns(UserWarning, match=r"perplexity 30 is too large for 13 points; using 4"):
        ji.embed_2d(FEATS, method="tsne")
    assert fake_opentsne[-1]["perplexity"] == 4.0  # (13 - 1) / 3
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ji.embed_2d(FEATS, method="tsne", perplexity=4.0)
    assert fake_opentsne[-1]["perplexity"] == 4.0
