"""Texture synthesis and style transfer: losses equal to PyTorch's, L-BFGS in the loop, resume."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxinterp as ji
from jaxinterp.synthesis import style as S

TEST_SEED = 1_000_003


@pytest.fixture(scope="session")
def shapes_images():
    return ji.data.shapes(jax.random.key(TEST_SEED), 4, start=3000).images


def photo_like(key, n=1, size=64):
    """Images with natural-image statistics: 1/f noise, colour-correlated, plus soft edges."""
    h = w = size
    fy, fx = np.fft.fftfreq(h)[:, None], np.fft.rfftfreq(w)[None]
    scale = 1 / np.maximum(np.sqrt(fx ** 2 + fy ** 2), 1 / size)
    spec = jax.random.normal(key, (n, 3, h, w // 2 + 1, 2))
    img = jnp.fft.irfft2((spec[..., 0] + 1j * spec[..., 1]) * scale, s=(h, w)).transpose(0, 2, 3, 1)
    img = img @ jnp.asarray([[1.0, 0.8, 0.6], [0.3, 1.0, 0.5], [0.2, 0.4, 1.0]])
    img = (img - img.mean()) / (4 * img.std()) + 0.5
    return jnp.clip(img, 0, 1)


# --- losses equal the PyTorch tutorial's, both normalizations -------------------------------

try:
    import torch
except ImportError:  # only the tests that use `pair` skip, one by one
    torch = None


def torch_losses(tm, content, style, x, content_layer, style_layers, normalization, sw, cw):
    """The PyTorch tutorial's gram_matrix / StyleLoss / ContentLoss (tutorial normalization), or
    the same code with Gatys et al.'s normalization."""
    F = torch.nn.functional
    nchw = lambda a: torch.from_numpy(np.asarray(a, np.float64)).permute(0, 3, 1, 2)  # noqa: E731
    feats = lambda a: tm.net((nchw(a) - tm.mean) / tm.std)[1]  # noqa: E731

    def gram_matrix(input):
        a, b, c, d = input.size()
        features = input.view(a * b, c * d)
        G = torch.mm(features, features.t())
        return G.div(a * b * c * d) if normalization == "tutorial" else G.div(c * d)

    def layer_loss(G, A):
        if normalization == "tutorial":
            return F.mse_loss(G, A)
        return ((G - A) ** 2).sum() / (4 * G.shape[0] ** 2)

    fs, fc, fx = feats(style), feats(content), feats(x)
    w = 1.0 if normalization == "tutorial" else 1.0 / len(style_layers)
    style_score = sum(w * layer_loss(gram_matrix(fx[n]), gram_matrix(fs[n])) for n in style_layers)
    if normalization == "tutorial":
        content_score = F.mse_loss(fx[content_layer], fc[content_layer])
    else:
        content_score = 0.5 * ((fx[content_layer] - fc[content_layer]) ** 2).sum()
    return (sw * style_score).item(), (cw * content_score).item(), \
        gram_matrix(fx[style_layers[0]]).detach().numpy()


@pytest.fixture(scope="session", params=["vgg-mini", "vgg16"])
def pair(request, tmp_path_factory):
    if torch is None:
        pytest.skip("needs PyTorch")
    from torch_vgg import make_pair

    if request.param == "vgg-mini":
        jm, tm, _ = make_pair("vgg-mini", tmp_path_factory, num_classes=8, batch_norm=True)
        layers = ("features.0", "features.6", "features.13", "features.20")
        content_layer, size = "features.16", 48
    else:
        jm, tm, _ = make_pair("vgg16", tmp_path_factory, num_classes=10, hidden=64)
        layers = ("features.1", "features.6", "features.11", "features.18", "features.25")
        content_layer, size = "features.20", 32  # float64 convolutions are slow on XLA:CPU
    return jm, tm.double(), layers, content_layer, size


@pytest.mark.parametrize("normalization", ["tutorial", "paper"])
def test_gram_and_losses_equal_the_pytorch_tutorial(pair, normalization):
    jm, tm, layers, content_layer, size = pair
    rng = np.random.default_rng(0)
    content, x = (rng.random((1, size, size, 3)) for _ in range(2))
    style = rng.random((1, size + 16, size + 8, 3))  # another size than the content
    sw, cw = 1e6 if normalization == "tutorial" else 1e3, 1.0
    t_style, t_content, t_gram = torch_losses(tm, content, style, x, content_layer, layers,
                                              normalization, sw, cw)
    with jax.enable_x64(True):
        jm64 = jm.with_variables(jax.tree_util.tree_map(lambda v: jnp.asarray(v, jnp.float64),
                                                        jm.variables))
        cfg = S._Config(layers, content_layer, normalization, "lbfgs", 0.02)
        names = tuple(layers)
        weights = S._weights(names, None, normalization, sw, cw, 0.0)
        weights = jax.tree_util.tree_map(lambda a: jnp.asarray(a, jnp.float64), weights)
        targets = {"grams": S._style_grams(jm64, style, 1, names, normalization),
                   "content": S.layer_output(jm64, content, content_layer)}
        total, s, c = S._final_terms(jm64, jnp.asarray(x), targets, weights, cfg)
        g = ji.gram(ji.optvis.features(jm64, jnp.asarray(x))[layers[0]], normalization)
        assert s.dtype == jnp.float64
    np.testing.assert_allclose(np.asarray(g)[0], t_gram, rtol=1e-5, atol=1e-7 * np.abs(t_gram).max())
    np.testing.assert_allclose(float(s[0]), t_style, rtol=1e-5)
    np.testing.assert_allclose(float(c[0]), t_content, rtol=1e-5)
    np.testing.assert_allclose(float(total[0]), t_style + t_content, rtol=1e-5)


def test_default_layers_are_gatys_rectified_ones(default_model):
    # DeepTextures' conv1_1 blob is rectified (Caffe's in-place ReLU): relu1_1 here
    from types import SimpleNamespace

    from jaxinterp.models import vgg

    vgg19 = SimpleNamespace(specs=vgg.vgg("vgg19").specs())
    assert S.texture_layers(vgg19) == ["relu1_1", "pool1", "pool2", "pool3", "pool4"]
    assert S.style_layers(vgg19) == ["relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1"]
    assert S.content_layer(vgg19) == "relu4_2"
    assert S.texture_layers(SimpleNamespace(specs=vgg.vgg("vgg16_bn").specs()))[0] == "relu1_1"
    assert S.texture_layers(default_model) == ["relu1_1", "pool1", "pool2", "pool3"]
    assert S.style_layers(default_model) == ["relu1_1", "relu2_1", "relu3_1", "relu4_1"]


# --- synthesis on the shipped model ------------------------------------------------------------

@pytest.mark.parametrize("source,optimizer", [("shapes", "lbfgs"), ("photo", "lbfgs"),
                                              ("shapes", "lbfgs-fixed")])
@pytest.mark.slow
def test_texture_lowers_the_style_loss_a_hundredfold(default_model, shapes_images, source,
                                                     optimizer):
    style = shapes_images[:1] if source == "shapes" else photo_like(jax.random.key(2))
    r = ji.texture(default_model, style, steps=60, optimizer=optimizer)
    ratio = float(r.losses[0, 0] / r.style_loss[0])
    assert ratio >= 100, ratio
    assert float(r.images.min()) >= 0 and float(r.images.max()) <= 1


@pytest.mark.slow
def test_lbfgs_reaches_a_loss_in_fewer_iterations_than_adam(default_model, shapes_images):
    style = shapes_images[1:2]
    lb = np.asarray(ji.texture(default_model, style, steps=40).losses[:, 0])
    ad = np.asarray(ji.texture(default_model, style, steps=40, optimizer="adam", lr=0.05)
                    .losses[:, 0])
    goal = ad[-1]  # what Adam reaches in 40 iterations, L-BFGS reaches in at most 20 (16 here)
    assert (lb <= goal).any() and np.argmax(lb <= goal) + 1 <= 40 // 2, (lb[::5], ad[::5])


@pytest.mark.slow
def test_a_batch_of_pairs_equals_the_pairs_one_by_one(default_model, shapes_images):
    # Adam: each step is a continuous function of the last, so a batch and single images agree
    # to rounding. (L-BFGS's line search makes discrete choices that rounding differences
    # between a batched and a single convolution can flip: on some CPUs its images then differ
    # by 4e-3 after 8 steps, though each example is optimized on its own.)
    content, style = shapes_images[:2], shapes_images[2:4]
    both = ji.style_transfer(default_model, content, style, steps=8, optimizer="adam")
    for i in range(2):
        one = ji.style_transfer(default_model, content[i:i + 1], style[i:i + 1], steps=8,
                                optimizer="adam")
        np.testing.assert_allclose(both.images[i], one.images[0], atol=2e-5)
    assert float(both.losses[-1].max()) < float(both.losses[0].min())
    lbfgs = ji.style_transfer(default_model, content, style, steps=8)
    one = ji.style_transfer(default_model, content[1:], style[1:], steps=8)
    np.testing.assert_allclose(lbfgs.losses[-1, 1], one.losses[-1, 0], rtol=2e-2)


@pytest.mark.slow
def test_style_images_of_another_size_and_one_style_for_all(default_model, shapes_images):
    big = ji.data.shapes(jax.random.key(TEST_SEED), 1, start=3100, size=96).images
    r = ji.style_transfer(default_model, shapes_images[:2], big[0], steps=5)
    assert r.images.shape == (2, 64, 64, 3)
    assert np.all(np.asarray(r.losses[-1] < r.losses[0]))


@pytest.mark.slow
def test_a_resumed_run_ends_with_the_uninterrupted_result(default_model, shapes_images, tmp_path):
    style = shapes_images[:1]
    kw = dict(steps=12, checkpoint_every=4, key=3)
    whole = ji.texture(default_model, style, **kw)
    seen = []

    def crash(done, steps, carry):
        seen.append(done)
        if done == 8:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        ji.texture(default_model, style, checkpoint_dir=tmp_path / "run", progress=crash, **kw)
    assert seen == [4, 8]
    seen.clear()
    resumed = ji.texture(default_model, style, checkpoint_dir=tmp_path / "run",
                         progress=lambda d, s, c: seen.append(d), **kw)
    assert seen == [8, 12]  # picked up at step 8: only one chunk recomputed
    np.testing.assert_array_equal(resumed.images, whole.images)
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == ["jaxinterp-run.json", "step_12"]
    with pytest.raises(ValueError, match="other inputs"):  # another run into the same directory
        ji.texture(default_model, shapes_images[1:2], checkpoint_dir=tmp_path / "run", **kw)
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("user data")
    with pytest.raises(ValueError, match="holds no jaxinterp run"):
        ji.texture(default_model, style, checkpoint_dir=tmp_path / "mine", **kw)
    assert (tmp_path / "mine" / "notes.txt").read_text() == "user data"


def test_average_pooling_switch_keeps_the_weights(default_model, shapes_images):
    avg = default_model.with_pool("avg")
    assert avg.params is default_model.params and dict(avg.meta.config)["pool"] == "avg"
    x = shapes_images[:2]
    a, b = avg(x)[1]["pool1"], default_model(x)[1]["relu1_1"]
    np.testing.assert_allclose(a, b.reshape(2, 32, 2, 32, 2, -1).mean((2, 4)), rtol=1e-5,
                               atol=1e-6)
    with pytest.raises(ValueError, match="pool must be"):
        default_model.with_pool("min")


def test_style_errors(default_model, shapes_images):
    m, x = default_model, shapes_images
    with pytest.raises(ValueError, match="unknown layer"):
        ji.texture(m, x[:1], layers=["conv9_9"])
    with pytest.raises(ValueError, match="style_weight must be >= 0"):
        ji.style_transfer(m, x[:1], x[1:2], style_weight=-1.0)
    with pytest.raises(ValueError, match="rank|dimensions|\\[N, H, W, 3\\]"):
        ji.style_transfer(m, x[0, 0], x[1:2])
    with pytest.raises(ValueError, match="style"):
        ji.style_transfer(m, x[:1], x[1:2, :4, :4])
    with pytest.raises(ValueError, match="optimizer must be"):
        ji.texture(m, x[:1], optimizer="sgd")
    with pytest.raises(ValueError, match="init must be"):
        ji.style_transfer(m, x[:1], x[1:2], init="zeros")
    with pytest.raises(ValueError, match="no spatial map"):
        ji.texture(m, x[:1], layers=["logits"])
    with pytest.raises(ValueError, match="3 images for 2 content"):
        ji.style_transfer(m, x[:2], x[:3])
