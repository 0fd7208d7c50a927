"""`jaxinterp.metrics` against Quantus 0.6 (and Captum's infidelity) on identical inputs.

Attribution-only metrics (complexity, localisation) compare on random float64 arrays. Metrics
that run the model use vgg-mini (with BatchNorm, 8 classes) at 24x24 and its plain-torch twin
with the same weights, both in float64: jaxinterp under `jax.enable_x64`, the torch net cast to
double inside a module that also takes Quantus' float32 tensors (Quantus' `predict` converts
its input with `torch.Tensor(x)`, float32; the images are float32-representable so that this
loses nothing). Quantus' random draws are replaced by the ones handed to jaxinterp
(`quantus_shim.draws`). Tolerance: 1e-10 relative (measured ≤ 1e-12 in float64).

Where Quantus' definition is ambiguous or broken, the test says which reading is taken:
- one maximum normalises the whole batch: jaxinterp's `normalise="batch"` reproduces it (the
  default "image" is checked against Quantus called one image at a time);
- a map `[N, H, W]` spread over the 3 channels ties 3 features per pixel, which NumPy's
  unstable argsort orders arbitrarily: steps of whole pixels (a multiple of 3 features) here;
- ROAD raises on RGB images (it imputes channel-first *features* as pixels): compared on grey
  images (one channel for Quantus, three equal ones for jaxinterp) and the imputation alone on
  RGB;
- `np.trapz` (Quantus' AUC) was removed in NumPy 2.4: `quantus_shim.numpy_trapz` puts
  `np.trapezoid` in its place (the reading taken: the trapezoid rule with unit spacing);
- MPRT: Quantus' randomised layers are rounded to float32 (jaxinterp imports float32 weights)
  and handed to jaxinterp as `models=`; Quantus' stages include each BatchNorm on its own.
"""

import copy

import jax
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("safetensors.torch")

import jaxinterp as ji  # noqa: E402
import jaxinterp.metrics as metrics  # noqa: E402
from quantus_shim import draws, import_quantus, numpy_trapz  # noqa: E402
from torch_vgg import export_pair, seeded_vgg  # noqa: E402

TOL = 1e-10


@pytest.fixture(scope="module")
def quantus():
    try:
        return import_quantus()
    except ImportError as e:
        pytest.skip(str(e))


def rel(ours, theirs):
    ours, theirs = np.asarray(ours, np.float64), np.asarray(theirs, np.float64)
    assert ours.shape == theirs.shape, (ours.shape, theirs.shape)
    assert np.array_equal(np.isnan(ours), np.isnan(theirs))
    ours, theirs = ours[~np.isnan(ours)], theirs[~np.isnan(theirs)]
    return np.abs(ours - theirs).max() / max(np.abs(theirs).max(), 1e-300) if ours.size else 0.0


def nchw(a):
    return np.ascontiguousarray(a if a.ndim == 3 else a.transpose(0, 3, 1, 2))


# --------------------------------------------------------------------------- attributions only

N, S = 3, 16


@pytest.fixture(scope="module")
def arrays():
    rng = np.random.default_rng(0)
    x = rng.random((N, S, S, 3))
    maps = rng.normal(size=(N, S, S))
    pixels = rng.normal(size=(N, S, S, 3))
    mask = np.zeros((N, S, S), bool)
    mask[0, 2:9, 3:12] = True
    mask[1, 5:15, 0:6] = True
    mask[2] = rng.random((S, S)) > 0.7
    return x, maps, pixels, mask


COMPLEXITY = [("sparseness", "Sparseness"), ("complexity", "Complexity"),
              ("effective_complexity", "EffectiveComplexity")]


@pytest.mark.parametrize("ours,theirs", COMPLEXITY)
@pytest.mark.parametrize("kind", ["map", "pixels"])
def test_complexity_parity(quantus, arrays, ours, theirs, kind):
    x, maps, pixels, _ = arrays
    a = maps if kind == "map" else pixels
    if ours == "effective_complexity":  # values near the threshold: counts that can change
        a = a * (np.abs(a) > 0.5)
    q = getattr(quantus, theirs)(disable_warnings=True)(None, nchw(x), np.zeros(N, int),
                                                        nchw(a).copy())
    with jax.enable_x64(True):
        o = getattr(metrics, ours)(None, None, None, a, normalise="batch")
        # the default: each image by its own maximum = Quantus called one image at a time
        o1 = getattr(metrics, ours)(None, None, None, a)
    q1 = [getattr(quantus, theirs)(disable_warnings=True)(None, nchw(x[i:i + 1]), np.zeros(1, int),
                                                          nchw(a[i:i + 1]).copy())[0]
          for i in range(N)]
    assert rel(o, q) < TOL
    assert rel(o1, q1) < TOL


LOCALISATION = [("pointing_game", "PointingGame"),
                ("relevance_mass_accuracy", "RelevanceMassAccuracy"),
                ("relevance_rank_accuracy", "RelevanceRankAccuracy"),
                ("attribution_localisation", "AttributionLocalisation"), ("auc", "AUC")]


@pytest.mark.parametrize("ours,theirs", LOCALISATION)
def test_localisation_parity(quantus, arrays, ours, theirs):
    x, maps, _, mask = arrays
    a = maps.copy()
    a[1, 7, 2] = 10.0  # image 1's maximum inside its mask: a pointing-game hit
    q = getattr(quantus, theirs)(disable_warnings=True)(None, nchw(x), np.zeros(N, int), a.copy(),
                                                        mask[:, None].astype(float))
    with jax.enable_x64(True):
        o = getattr(metrics, ours)(None, None, None, a, mask, normalise="batch")
    assert rel(o, q) < TOL
    if ours == "pointing_game":
        assert o[1] == 1.0


# Quantus' (and sklearn's) warnings about the empty mask
@pytest.mark.filterwarnings("ignore::UserWarning", "ignore::RuntimeWarning")
@pytest.mark.parametrize("ours,theirs", LOCALISATION)
def test_localisation_abs_and_empty_mask(quantus, arrays, ours, theirs):
    """Quantus' `abs=True` option and its NaN for an empty mask (Quantus' pointing game writes
    NaN into a boolean array, which makes it True: a hit; the reading taken is NaN)."""
    x, maps, _, mask = arrays
    mask = mask.copy()
    mask[2] = False
    q = getattr(quantus, theirs)(abs=True, disable_warnings=True)(
        None, nchw(x), np.zeros(N, int), maps.copy(), mask[:, None].astype(float))
    with jax.enable_x64(True):
        o = getattr(metrics, ours)(None, None, None, maps, mask, abs=True)
    assert np.isnan(o[2]) and not np.isnan(o[:2]).any()
    if ours == "pointing_game":
        assert q[2] == True  # noqa: E712 (Quantus' NaN cast to bool)
        o, q = o[:2], q[:2]
    assert rel(o, q) < TOL


def test_weighted_pointing_game(quantus, arrays):
    """Quantus 0.6's `PointingGame(weighted=True)` raises as soon as one image is a hit (it
    assigns a `keepdims` column to a boolean selection); the reading taken is its evident
    intent, a hit scoring `1 − |mask| / F`."""
    x, maps, _, mask = arrays
    a = maps.copy()
    a[1, 7, 2] = 10.0
    with pytest.raises(TypeError):
        quantus.PointingGame(weighted=True, disable_warnings=True)(
            None, nchw(x), np.zeros(N, int), a.copy(), mask[:, None].astype(float))
    hits = np.array(quantus.PointingGame(disable_warnings=True)(
        None, nchw(x), np.zeros(N, int), a.copy(), mask[:, None].astype(float)), float)
    o = metrics.pointing_game(None, None, None, a, mask, weighted=True)
    assert o == pytest.approx(np.where(hits > 0, 1 - mask.sum((1, 2)) / (S * S), 0.0))
    assert o[1] > 0


# --------------------------------------------------------------------------- with the model

SIZE = 24  # H·W = 576 is a multiple of 3: a map's tied features fill whole steps


class Twin(torch.nn.Module):
    """The torch VGG in float64 on [0, 1] images (float32 input accepted: Quantus' predict);
    a one-channel image is repeated to RGB (ROAD on grey images)."""

    def __init__(self, net, mean, std):
        super().__init__()
        self.net = copy.deepcopy(net).double().eval()
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float64).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float64).view(1, 3, 1, 1))

    def forward(self, x):
        x = x.double()
        if x.shape[1] == 1:
            x = x.repeat(1, 3, 1, 1)
        return self.net((x - self.mean) / self.std)[0]


def cast64(jm):
    return jm.with_variables(jax.tree_util.tree_map(lambda v: jnp.asarray(v, jnp.float64),
                                                    jm.variables))


class Case:
    def __init__(self, tmp_path_factory):
        net = seeded_vgg("vgg-mini", 0, dense_std=0.05, bias_std=0.1, num_classes=8,
                         batch_norm=True)
        jm, _, _ = export_pair(net, "vgg-mini", tmp_path_factory)
        self.tmp = tmp_path_factory
        self.tw = Twin(net, jm.preprocess.mean, jm.preprocess.std).eval()
        with jax.enable_x64(True):
            self.jm = cast64(jm)
        rng = np.random.default_rng(0)
        self.rng = rng
        self.x = rng.random((2, SIZE, SIZE, 3)).astype(np.float32).astype(np.float64)
        self.xc = nchw(self.x)
        with torch.no_grad():
            logits = self.tw(torch.from_numpy(self.xc)).numpy()
        self.y = np.argsort(-logits, 1)[:, 1].copy()  # the runner-up class
        self.a = rng.normal(size=self.x.shape)
        self.map = rng.normal(size=self.x.shape[:3])
        self.features = self.a.size // 2


@pytest.fixture(scope="module")
def case(tmp_path_factory):
    return Case(tmp_path_factory)


def torch_saliency(model, inputs, targets, **kwargs):
    """The explain_func handed to Quantus: the gradient of the target logit, float64."""
    xt = torch.tensor(np.asarray(inputs), dtype=torch.float64, requires_grad=True)
    out = model(xt)
    out[torch.arange(len(targets)), torch.as_tensor(targets)].sum().backward()
    return xt.grad.numpy()


def torch_input_x_gradient(model, inputs, targets, **kwargs):
    return torch_saliency(model, inputs, targets) * np.asarray(inputs)


@pytest.mark.slow
def test_faithfulness_correlation_parity(quantus, case):
    runs, size = 12, 60
    rng = np.random.default_rng(1)
    subsets = np.stack([np.stack([rng.choice(case.features, size, replace=False)
                                  for _ in range(2)]) for _ in range(runs)])  # [runs, N, s]
    for a in (case.a, case.map):
        with draws("choice", [s for run in subsets for s in run]):
            q = quantus.FaithfulnessCorrelation(nr_runs=runs, subset_size=size,
                                                return_aggregate=False, disable_warnings=True)(
                case.tw, case.xc, case.y, nchw(a).copy())
        with jax.enable_x64(True):
            o = metrics.faithfulness_correlation(case.jm, case.x, case.y, a,
                                                 subsets=subsets.swapaxes(0, 1))
        assert rel(o, q) < TOL


@pytest.mark.slow
def test_pixel_flipping_parity(quantus, case):
    for a in (case.a, case.map):
        with numpy_trapz():
            q = np.array(quantus.PixelFlipping(features_in_step=96, disable_warnings=True)(
                case.tw, case.xc, case.y, nchw(a).copy()))
            q_auc = np.array(quantus.PixelFlipping(features_in_step=96, return_auc_per_sample=True,
                                                   disable_warnings=True)(
                case.tw, case.xc, case.y, nchw(a).copy()))
        with jax.enable_x64(True):
            o = metrics.pixel_flipping(case.jm, case.x, case.y, a, features_in_step=96)
        assert rel(o.curves, q) < TOL
        assert rel(o.scores, q_auc) < TOL


@pytest.mark.slow
@pytest.mark.parametrize("patch,order", [(8, "morf"), (5, "lerf")])  # 5: padded, floor / ceil
def test_region_perturbation_parity(quantus, case, patch, order):
    for a in (case.a, case.map):
        q = np.array(quantus.RegionPerturbation(patch_size=patch, order=order,
                                                regions_evaluation=10, disable_warnings=True)(
            case.tw, case.xc, case.y, nchw(a).copy()))
        with jax.enable_x64(True):
            o = metrics.region_perturbation(case.jm, case.x, case.y, a, patch_size=patch,
                                            order=order, regions=10)
        assert rel(o.curves, q) < TOL


@pytest.mark.slow
def test_road_parity_grey(quantus, case):
    """ROAD on grey images: Quantus with one channel, jaxinterp with three equal ones and the
    same noise in each; the per-percentage accuracies (Quantus' output) and, one image at a
    time, the per-image curves."""
    grey = np.repeat(case.x.mean(-1, keepdims=True).astype(np.float32).astype(np.float64), 3, -1)
    xc = nchw(grey[..., :1])
    with torch.no_grad():
        y = case.tw(torch.from_numpy(xc)).numpy().argmax(1)
    pcts = [10, 30, 50, 60, 70, 80, 90]
    rng = np.random.default_rng(2)
    z = rng.standard_normal((2, len(pcts), SIZE, SIZE))
    order = np.argsort(-case.map.reshape(2, -1), axis=1)

    def noise(images):  # Quantus' draws, call by call: [1, k] for the top-k pixels
        return [z[i, p].reshape(-1)[order[i, :int(SIZE * SIZE * pct / 100)]][None]
                for p, pct in enumerate(pcts) for i in images]

    with jax.enable_x64(True):
        o = metrics.road(case.jm, grey, y, case.map, percentages=pcts, noise=0.1,
                         noise_draws=np.repeat(z[..., None], 3, -1))
    assert 0 < o.curves.mean() < 1  # some predictions survive, some do not
    metric = quantus.ROAD(percentages=pcts, noise=0.1, disable_warnings=True)
    with draws("randn", noise([0, 1])):
        q = metric(case.tw, xc, y, case.map[:, None].copy())
    assert rel(o.curves.mean(0), [q[p] for p in pcts]) < TOL
    for i in range(2):
        with draws("randn", noise([i])):
            q = quantus.ROAD(percentages=pcts, noise=0.1, disable_warnings=True)(
                case.tw, xc[i:i + 1], y[i:i + 1], case.map[i:i + 1, None].copy())
        assert list(o.curves[i]) == [q[p] for p in pcts]


@pytest.mark.slow
def test_imputation_parity_rgb(quantus, case):
    """Quantus' `noisy_linear_imputation` on an RGB image (pixel indices), against
    `metrics.impute` with the same noise."""
    from quantus.functions.perturb_func import noisy_linear_imputation

    order = np.argsort(-case.map[0].reshape(-1))
    k = int(SIZE * SIZE * 0.6)
    idx = order[:k]
    z = np.random.default_rng(3).standard_normal((3, k))
    with draws("randn", [z]):
        q = noisy_linear_imputation(nchw(case.x[:1])[0].copy(), idx, noise=0.01)
    full = np.zeros((3, SIZE * SIZE))
    full[:, idx] = 0.01 * z
    removed = np.zeros(SIZE * SIZE, bool)
    removed[idx] = True
    with jax.enable_x64(True):
        o = metrics.impute(jnp.asarray(case.x[:1]), jnp.asarray(removed.reshape(1, SIZE, SIZE)),
                           jnp.asarray(full.reshape(3, SIZE, SIZE).transpose(1, 2, 0)[None]))
    assert rel(nchw(np.asarray(o))[0], q) < 1e-9  # conjugate gradients to 1e-12


@pytest.mark.slow
def test_monotonicity_correlation_parity(quantus, case):
    per_step, samples = 192, 3
    steps = case.features // per_step
    fills = np.random.default_rng(4).random((2, steps, samples)).astype(np.float32)
    fills = fills.astype(np.float64)
    with draws("uniform", [fills[:, k, s] for k in range(steps) for s in range(samples)]):
        q = quantus.MonotonicityCorrelation(nr_samples=samples, features_in_step=per_step,
                                            disable_warnings=True)(
            case.tw, case.xc, case.y, nchw(case.a).copy())
    with jax.enable_x64(True):
        o = metrics.monotonicity_correlation(case.jm, case.x, case.y, case.a, samples=samples,
                                             features_in_step=per_step, fills=fills)
    assert rel(o, q) < TOL


@pytest.mark.slow
@pytest.mark.parametrize("normalize", [False, True])
def test_infidelity_parity_captum(case, normalize):
    captum_metrics = pytest.importorskip("captum.metrics")
    k = 10
    pert = np.random.default_rng(5).normal(0, 0.003, (2, k, SIZE, SIZE, 3))

    def perturb(inputs):  # Captum repeats each input k times in a row
        p = torch.from_numpy(nchw(pert.reshape(2 * k, SIZE, SIZE, 3)))
        return p, inputs - p

    q = captum_metrics.infidelity(case.tw, perturb, torch.from_numpy(case.xc),
                                  torch.from_numpy(nchw(case.a)), target=torch.from_numpy(case.y),
                                  n_perturb_samples=k, normalize=normalize).numpy()
    with jax.enable_x64(True):
        o = metrics.infidelity(case.jm, case.x, case.y, case.a, perturbations=pert,
                               normalize=normalize)
    assert rel(o, q) < 1e-9


def _uniform_check(n, f):
    def check(low=None, high=None, size=None):
        assert size == (n, f), size
    return check


@pytest.mark.slow
@pytest.mark.parametrize("ours,theirs", [("max_sensitivity", "MaxSensitivity"),
                                         ("avg_sensitivity", "AvgSensitivity")])
def test_sensitivity_parity(quantus, case, ours, theirs):
    k = 5
    noise = np.random.default_rng(6).uniform(-0.2, 0.2, (2, k, SIZE, SIZE, 3))
    seq = [nchw(noise[:, s]).reshape(2, -1) for s in range(k)]
    with draws("uniform", seq, _uniform_check(2, case.features)):
        q = getattr(quantus, theirs)(nr_samples=k, disable_warnings=True)(
            case.tw, case.xc, case.y, None, explain_func=torch_input_x_gradient)
    with jax.enable_x64(True):
        o = getattr(metrics, ours)(case.jm, case.x, case.y, ji.input_x_gradient, noise=noise)
    assert rel(o, q) < TOL


@pytest.mark.slow
def test_local_lipschitz_parity(quantus, case):
    k = 5
    noise = np.random.default_rng(7).normal(0, 0.1, (2, k, SIZE, SIZE, 3))
    seq = [nchw(noise[:, s]).reshape(2, -1) for s in range(k)]
    with draws("normal", seq):
        q = quantus.LocalLipschitzEstimate(nr_samples=k, disable_warnings=True)(
            case.tw, case.xc, case.y, None, explain_func=torch_input_x_gradient)
    with jax.enable_x64(True):
        o = metrics.local_lipschitz_estimate(case.jm, case.x, case.y, ji.input_x_gradient,
                                             noise=noise, normalise="batch")
    assert rel(o, q) < TOL


@pytest.mark.slow
def test_random_logit_parity(quantus, case):
    np.random.seed(42)  # Quantus' draw of the other class, replayed
    picks = np.random.randint(0, 8 - 1, 2)
    other = np.array([[c for c in range(8) if c != case.y[i]][picks[i]] for i in range(2)])
    q = quantus.RandomLogit(num_classes=8, disable_warnings=True)(
        case.tw, case.xc, case.y, None, explain_func=torch_saliency)
    with jax.enable_x64(True):
        o = metrics.random_logit(case.jm, case.x, case.y, ji.saliency, other=other,
                                 normalise="batch")
    assert rel(o, q) < TOL


@pytest.mark.slow
def test_sufficiency_parity(quantus, case):
    """Six images whose attributions form two tight groups: neighbours exist."""
    rng = np.random.default_rng(8)
    x = np.concatenate([case.x, rng.random((4, SIZE, SIZE, 3))]).astype(np.float32)
    x = x.astype(np.float64)
    centre = rng.normal(size=(2, SIZE, SIZE, 3))
    a = centre[[0, 0, 0, 1, 1, 1]] + 0.05 * rng.normal(size=(6, SIZE, SIZE, 3))
    y = np.zeros(6, int)
    q = quantus.Sufficiency(disable_warnings=True)(case.tw, nchw(x), y, nchw(a).copy())
    with jax.enable_x64(True):
        o = metrics.sufficiency(case.jm, x, y, a, normalise="batch")
    assert (np.asarray(q) > 0).any()
    assert rel(o, q) < TOL


@pytest.mark.slow
def test_mprt_parity(quantus, case):
    from quantus.helpers.model.pytorch_model import PyTorchModel

    original = PyTorchModel.get_random_layer_generator
    recorded = []

    def rounded(self, order="top_down", seed=42):
        for name, model in original(self, order=order, seed=seed):
            with torch.no_grad():
                for p in model.parameters():
                    p.copy_(p.float().double())
            recorded.append((name, copy.deepcopy(model.net).float()))
            yield name, model

    PyTorchModel.get_random_layer_generator = rounded
    try:
        q = quantus.MPRT(disable_warnings=True)(case.tw, case.xc, case.y, None,
                                                explain_func=torch_saliency)
    finally:
        PyTorchModel.get_random_layer_generator = original
    models = []
    for name, net in recorded:
        jm, _, _ = export_pair(net, "vgg-mini", case.tmp)
        with jax.enable_x64(True):
            models.append((name, cast64(jm)))
    with jax.enable_x64(True):
        o = metrics.mprt(case.jm, case.x, case.y, ji.saliency, models=models)
    assert o.layers == tuple(q)
    assert rel(o.curves, np.array([q[k] for k in q]).T) < TOL
    assert o.curves[:, 0] == pytest.approx(1.0)
