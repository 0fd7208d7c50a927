"""Vision transformers: jaxinterp's ViT against a plain-torch twin with torchvision's names
(`.safetensors`, `.pth`, vision_transformer's `.npz`), attention rollout and Chefer et al.'s
relevance against a transcription of their code on the twin, token Grad-CAM against
pytorch-grad-cam with its ViT `reshape_transform`, and the methods' generic checks."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("safetensors")

import jaxinterp as ji  # noqa: E402
import parity_errors  # noqa: E402
from jaxinterp.attribution.transformers import rollout  # noqa: E402
from jaxinterp.models import vit as vit_lib  # noqa: E402
from torch_vit import chefer, export_vit, lxt_relevance, seeded_vit, to_npz  # noqa: E402

ARCH = "vit-mini"  # 64x64 images, 8x8 patches: 65 tokens, 4 blocks, 4 heads, width 96


def nchw(x):
    return torch.tensor(np.asarray(x, np.float32)).permute(0, 3, 1, 2)


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    """(jaxinterp model, torch twin taking [0, 1] NCHW images, images, runner-up targets)."""
    net = seeded_vit(ARCH, 0)
    jm, tm = export_vit(net, ARCH, tmp_path_factory.mktemp("vit") / "w.safetensors")
    x = np.random.default_rng(0).random((2, 64, 64, 3), dtype=np.float32)
    with torch.no_grad():
        logits = tm(nchw(x)).numpy()
    target = np.argsort(-logits, 1)[:, 1].copy()  # the runner-up: not a trivial target
    return jm, tm, x, target


def float64(jm):
    return jm.with_variables(jax.tree_util.tree_map(lambda a: jnp.asarray(a, jnp.float64),
                                                    jm.variables))


def test_logits_and_layers_equal_the_torchvision_layout(pair, tmp_path):
    jm, tm, x, _ = pair
    with torch.no_grad():
        want = tm(nchw(x)).numpy()
    logits, feats = jm(x)
    parity_errors.assert_close(logits, want, 1e-4)
    # the same weights through a .pth
    jm2, _ = export_vit(tm.net, ARCH, tmp_path / "w.pth", fmt="torch")
    parity_errors.assert_close(jm2(x)[0], want, 1e-4)
    # the recorded attention probabilities are the twin's, per head
    records = tm.net.recording(True)
    try:
        with torch.no_grad():
            tm(nchw(x))
    finally:
        tm.net.recording(False)
    for i, rec in enumerate(records):
        probs = feats[f"encoder/layers/encoder_layer_{i}/self_attention/probs"]
        assert probs.shape == (2, 4, 65, 65)
        parity_errors.assert_close(probs, rec["a"].numpy(), 1e-4)
    assert feats["encoder/layers/encoder_layer_3"].shape == (2, 65, 96)
    assert jm.default_layer() == "encoder/layers/encoder_layer_3/ln_1"


def test_hand_written_attention_equals_torch_multihead_attention(pair):
    _, tm, x, _ = pair  # the twin's recording path (Chefer's transcription) is the real one
    with torch.no_grad():
        plain = tm(nchw(x)).numpy()
        tm.net.recording(True)
        try:
            recorded = tm(nchw(x)).numpy()
        finally:
            tm.net.recording(False)
    parity_errors.assert_close(recorded, plain, 1e-5)


@pytest.mark.slow
def test_vit_b_16_logits_equal_the_torch_twin(tmp_path):
    net = seeded_vit("vit_b_16", 1, num_classes=1000, sharpness=1.0)
    jm, tm = export_vit(net, "vit_b_16", tmp_path / "b16.safetensors")
    x = np.random.default_rng(1).random((1, 224, 224, 3), dtype=np.float32)
    with torch.no_grad():
        want = tm(nchw(x)).numpy()
    parity_errors.assert_close(jm(x)[0], want, 1e-4)
    assert jm.input_size == (224, 224) and jm.num_classes == 1000


def test_npz_of_vision_transformer_round_trips(pair, tmp_path):
    jm, _, x, _ = pair
    to_npz(jm, tmp_path / "vit.npz")
    back = ji.import_weights(tmp_path / "vit.npz", arch=ARCH)
    assert back.preprocess == ji.Preprocess((0.5,) * 3, (0.5,) * 3)  # their [-1, 1] inputs
    module = jm.apply.module.clone(approximate_gelu=True)  # their tanh GELU
    want = ji.wrap(module, jm.variables, input_size=(64, 64), preprocess=back.preprocess)(x)[0]
    parity_errors.assert_close(back(x)[0], want, 1e-6)
    assert back.meta.to_dict()["config"]["approximate_gelu"] is True


def test_mismatched_files_are_reported(pair, tmp_path):
    from safetensors import torch as safetensors_torch

    state = {k: v.detach().contiguous() for k, v in pair[1].net.state_dict().items()}
    del state["encoder.layers.encoder_layer_2.ln_2.bias"]
    state["encoder.layers.encoder_layer_0.mlp.3.weight"] = torch.zeros(96, 100)
    state["extra.weight"] = torch.zeros(3)
    safetensors_torch.save_file(state, str(tmp_path / "bad.safetensors"))
    with pytest.raises(ji.CheckpointError) as e:
        ji.import_weights(tmp_path / "bad.safetensors", arch=ARCH)
    msg = str(e.value)
    assert "missing params/encoder/layers/encoder_layer_2/ln_2/bias" in msg
    assert "params/encoder/layers/encoder_layer_0/mlp/3/kernel: file has (100, 96)" in msg
    assert "unexpected params/extra.weight" in msg


# --- Chefer et al. and rollout against the transcription, float64 ------------------------------
CHEFER = {
    "rollout": lambda m, x, t: ji.attention_rollout(m, x, upsample=False),
    "rollout-max-discard": lambda m, x, t: ji.attention_rollout(
        m, x, head_fusion="max", discard_ratio=0.5, upsample=False),
    "rollout-min-start": lambda m, x, t: ji.attention_rollout(m, x, head_fusion="min",
                                                              start_layer=1, upsample=False),
    "iccv2021": lambda m, x, t: ji.transformer_attribution(m, x, t, variant="iccv2021",
                                                           upsample=False),
    "cvpr2021": lambda m, x, t: ji.transformer_attribution(m, x, t, upsample=False),
    "cvpr2021-start": lambda m, x, t: ji.transformer_attribution(m, x, t, start_layer=2,
                                                                 upsample=False),
}
THEIRS = {"rollout": ("rollout", {}),
          "rollout-max-discard": ("rollout", dict(head_fusion="max", discard_ratio=0.5)),
          "rollout-min-start": ("rollout", dict(head_fusion="min", start_layer=1)),
          "iccv2021": ("iccv2021", {}), "cvpr2021": ("cvpr2021", {}),
          "cvpr2021-start": ("cvpr2021", dict(start_layer=2))}


# the default run: one case of each method; CI's slow step: the options
@pytest.mark.parametrize("case", [c if c in ("rollout", "iccv2021", "cvpr2021") else pytest.param(
    c, marks=pytest.mark.slow) for c in CHEFER])
def test_equals_chefers_code(pair, case):
    jm, tm, x, target = pair
    tm64 = type(tm)(tm.net, jm.preprocess.mean, jm.preprocess.std).double()
    method, options = THEIRS[case]
    want = np.stack([chefer(tm64, nchw(x[i:i + 1]).double(), int(target[i]), method, **options)
                     .numpy().reshape(8, 8) for i in range(len(x))])
    tm64.float()
    with jax.enable_x64(True):
        ours = CHEFER[case](float64(jm), jnp.asarray(x, jnp.float64), target)
        assert ours.shape == (2, 8, 8) and ours.dtype == jnp.float64
        parity_errors.assert_close(ours, want, 1e-5)
    assert np.ptp(want) > 0.05 * np.abs(want).max()  # a map with structure, not a constant


@pytest.mark.parametrize("composite", ["attn_lrp", "cp_lrp"])
def test_attn_lrp_equals_lxt(pair, composite):
    pytest.importorskip("lxt")
    jm, tm, x, target = pair
    net64 = type(tm.net)(ARCH, 10)
    net64.load_state_dict(tm.net.state_dict())
    net64 = net64.double().eval()
    xn = nchw(np.asarray(jm.preprocess(jnp.asarray(x)))).double()
    want, logits = zip(*[lxt_relevance(net64, xn[i:i + 1], int(target[i]), composite)
                         for i in range(len(x))])
    want = np.concatenate([w.numpy() for w in want]).transpose(0, 2, 3, 1)
    with jax.enable_x64(True):
        m64, x64 = float64(jm), jnp.asarray(x, jnp.float64)
        ours = ji.lrp(m64, x64, target, composite=composite, start="logit")
        assert ours.shape == (2, 64, 64, 3) and ours.dtype == jnp.float64
        parity_errors.assert_close(ours, want, 1e-5)
        one = ji.lrp(m64, x64, target, composite=composite)  # start="one": divided by the logit
        scaled = ours / np.asarray(logits)[:, None, None, None]
        np.testing.assert_allclose(one, scaled, rtol=1e-9,  # (near-zero entries: 1e-9 of max)
                                   atol=1e-9 * np.abs(scaled).max())
        # the rules change the result: not the plain gradient times the normalized input
        xn64 = jm.preprocess(x64)
        plain = xn64 * jax.grad(lambda v: m64.apply.module.apply(m64.variables, v)[
            jnp.arange(2), target].sum())(xn64)
        assert parity_errors.rel_err(ours, plain) > 0.05


def test_token_grad_cam_equals_pytorch_grad_cam_with_reshape_transform(pair):
    from gradcam_shim import import_gradcam

    try:
        pgc = import_gradcam()
    except ImportError as e:
        pytest.skip(str(e))
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    jm, tm, x, target = pair

    def reshape_transform(tensor, height=8, width=8):  # pytorch-grad-cam's ViT tutorial
        result = tensor[:, 1:, :].reshape(tensor.size(0), height, width, tensor.size(2))
        return result.transpose(2, 3).transpose(1, 2)

    # float64 on both sides (in float32 the difference is 1.1e-4 of the largest value on an
    # AMD EPYC, from rounding alone)
    net64 = type(tm.net)(ARCH, 10)
    net64.load_state_dict(tm.net.state_dict())
    tm = type(tm)(net64.double().eval(), jm.preprocess.mean, jm.preprocess.std)
    layer = tm.net.encoder.layers[-1].ln_1
    inp = nchw(x).double()
    targets = [ClassifierOutputTarget(int(c)) for c in target]
    for ours_fn, theirs_cls in ((ji.grad_cam, "GradCAM"), (ji.layer_cam, "LayerCAM")):
        cam = getattr(pgc, theirs_cls)(model=tm, target_layers=[layer],
                                       reshape_transform=reshape_transform)
        try:
            outputs = cam.activations_and_grads(inp)
            tm.zero_grad()
            sum(t(o) for t, o in zip(targets, outputs)).backward(retain_graph=True)
            acts = cam.activations_and_grads.activations[0].numpy()
            grads = cam.activations_and_grads.gradients[0].numpy()
            raw = cam.get_cam_image(inp, layer, targets, acts, grads, False)
        finally:
            cam.activations_and_grads.release()
        with jax.enable_x64(True):  # default layer: ln_1
            ours = ours_fn(float64(jm), jnp.asarray(x, jnp.float64), target, relu=False,
                           upsample=False)
        assert ours.shape == (2, 8, 8)
        parity_errors.assert_close(ours, raw, 1e-9)


# --- analytic cases and errors --------------------------------------------------------------------

def test_uniform_attention_rolls_out_to_a_constant_map(pair):
    jm = pair[0]
    params = jax.tree_util.tree_map(lambda a: a, jm.variables["params"])
    for i in range(4):
        sa = params["encoder"]["layers"][f"encoder_layer_{i}"]["self_attention"]
        sa["query"] = jax.tree_util.tree_map(jnp.zeros_like, sa["query"])
    m = jm.with_variables({"params": params})  # q = 0: every attention row is uniform
    out = np.asarray(ji.attention_rollout(m, pair[2], upsample=False))
    np.testing.assert_allclose(out, out[:, :1, :1] * np.ones_like(out), rtol=1e-5)
    # ((U + I) / 2)^4 = (I + 15 U) / 16, U = 1 / 65 everywhere
    np.testing.assert_allclose(out.sum((1, 2)), 64 * 15 / (16 * 65), rtol=1e-5)


def test_a_wrapped_vit_names_its_attention(pair):
    jm, _, x, target = pair
    module = jm.apply.module
    user = ji.wrap(module, jm.variables, input_size=(64, 64), preprocess=jm.preprocess)
    layers = vit_lib.attention_layers(module)
    np.testing.assert_allclose(ji.attention_rollout(user, x, attention=layers),
                               ji.attention_rollout(jm, x), rtol=1e-6)
    np.testing.assert_allclose(
        ji.transformer_attribution(user, x, target, variant="iccv2021", attention=layers),
        ji.transformer_attribution(jm, x, target, variant="iccv2021"), rtol=1e-6)
    # without attention=: the softmaxes of the traced function (the ViT's 4, in order)
    np.testing.assert_allclose(ji.attention_rollout(user, x), ji.attention_rollout(jm, x),
                               rtol=1e-6)
    np.testing.assert_allclose(
        ji.transformer_attribution(user, x, target, variant="iccv2021"),
        ji.transformer_attribution(jm, x, target, variant="iccv2021"), rtol=1e-6)
    with pytest.raises(ValueError, match="cvpr2021"):
        ji.transformer_attribution(user, x, target, attention=layers)
    with pytest.raises(ValueError, match="not an attention-probability layer"):
        ji.attention_rollout(user, x, attention=["encoder/layers/encoder_layer_0"])


def test_attention_of_a_users_flax_vit_is_found_by_its_softmax():
    import flax.linen as nn

    class TinyViT(nn.Module):  # Flax's own attention; no layer named by the user
        sow: bool = False

        @nn.compact
        def __call__(self, x):
            x = nn.Conv(32, (8, 8), (8, 8), name="patches")(x)
            x = x.reshape(x.shape[0], -1, 32)
            cls = self.param("cls", nn.initializers.normal(1.0), (1, 1, 32))
            x = jnp.concatenate([jnp.broadcast_to(cls, (x.shape[0], 1, 32)), x], 1)
            for i in range(2):
                h = nn.LayerNorm()(x)
                x = x + nn.MultiHeadDotProductAttention(4, name=f"attn{i}")(
                    h, h, sow_weights=self.sow)
                x = x + nn.Dense(32)(nn.gelu(nn.Dense(64)(nn.LayerNorm()(x))))
            return nn.Dense(5)(x[:, 0])

    x = np.random.default_rng(3).random((2, 32, 32, 3), dtype=np.float32)
    variables = TinyViT().init(jax.random.key(0), x)
    m = ji.wrap(TinyViT(), variables, input_size=(32, 32))
    # the reference: Flax's own sown attention weights, rolled out
    _, inter = TinyViT(sow=True).apply(variables, x, mutable=["intermediates"])
    sown = [inter["intermediates"][f"attn{i}"]["attention_weights"][0] for i in range(2)]
    want = rollout([a.mean(1) for a in sown])[:, 0, 1:].reshape(2, 4, 4)
    parity_errors.assert_close(ji.attention_rollout(m, x, upsample=False), want, 1e-5)
    # ICCV 2021: the gradient at the found softmaxes equals the gradient at the sown weights
    t = np.array([1, 4])
    ours = ji.transformer_attribution(m, x, t, variant="iccv2021", upsample=False)
    assert ours.shape == (2, 4, 4) and np.ptp(np.asarray(ours)) > 0


def test_batch_jit_and_errors(pair, mini):
    jm, _, x, target = pair
    for f in (ji.attention_rollout, ji.transformer_attribution):
        both = np.asarray(f(jm, x, target))
        one = np.asarray(f(jm, x[1:], target[1:]))
        # float32 programs compiled for other shapes: within 1e-4 of the largest value; but
        # Chefer's CVPR rules divide by sums of signed relevance (the residual rule's
        # `a.sum()`), which float32 rounding moves: its float32 map differs from the float64
        # one by 0.7 % of the largest value (measured), jit from eager by 0.2 %
        rel = 1e-2 if f is ji.transformer_attribution else 1e-4
        parity_errors.assert_close(one[0], both[1], rel)
        jitted = jax.jit(lambda x, t: f(jm, x, t))(jnp.asarray(x), jnp.asarray(target))
        parity_errors.assert_close(jitted, both, rel)
        assert both.shape == (2, 64, 64)
    with pytest.raises(ValueError, match="attention"):
        ji.attention_rollout(mini, x)
    with pytest.raises(ValueError, match="head_fusion"):
        ji.attention_rollout(jm, x, head_fusion="median")
    with pytest.raises(ValueError, match="discard_ratio"):
        ji.attention_rollout(jm, x, discard_ratio=1.0)
    with pytest.raises(ValueError, match="start_layer"):
        ji.transformer_attribution(jm, x, target, start_layer=4)
    with pytest.raises(ValueError, match="64x64 images"):
        jm(np.zeros((1, 96, 96, 3), np.float32))
    assert ji.attribution.METHODS["attention_rollout"].supports(mini) is not None
    assert ji.attribution.METHODS["transformer_attribution"].supports(jm) is None


def test_vit_mini_by_name_is_the_shipped_checkpoint_or_a_clear_error():
    from jaxinterp.weights import shipped_checkpoint

    if shipped_checkpoint("vit-mini") is None:
        with pytest.raises(ValueError, match="not shipped"):
            ji.load_model("vit-mini")
        return
    m = ji.load_model("vit-mini")
    # issue #26 asks for >= 97 %: the shipped three-stage run reached 97.05 % on the 2,000
    # held-out images its metadata records (docs/site/transformers.md)
    recorded = m.meta.extra["test"]["accuracy"]
    assert m.arch == "vit-mini" and recorded >= 0.97
    b = ji.data.shapes(jax.random.key(1_000_003), 400, start=5000)  # held out, unseen here
    acc = float((np.asarray(m(b.images)[0]).argmax(-1) == np.asarray(b.labels)).mean())
    assert abs(acc - recorded) < 0.03, (acc, recorded)


def test_feature_visualization_of_vit_units(pair):
    """A ViT takes its input size only: the render resizes to it after the transforms, and
    takes the plain gradient (no ReLU to redirect). Channel = mean over tokens; neuron = a
    token's unit."""
    jm = pair[0]
    unit = ji.objectives.channel("encoder/layers/encoder_layer_2/mlp/0", 5)
    r = ji.visualize(jm, unit, steps=24, size=80, transforms=None)  # 80 -> resized to 64
    scores = np.asarray(r.scores)[:, 0]
    assert r.images.shape == (1, 80, 80, 3) and scores[-1] > scores[0] + 0.5
    feats = jm(np.asarray(jax.image.resize(r.images, (1, 64, 64, 3), "linear")))[1]
    np.testing.assert_allclose(  # the objective is the token mean of that unit
        unit(feats), feats["encoder/layers/encoder_layer_2/mlp/0"][..., 5].mean(1), rtol=1e-6)
    token = ji.objectives.neuron("encoder/layers/encoder_layer_1", 3, token=7)
    np.testing.assert_allclose(token(feats), feats["encoder/layers/encoder_layer_1"][:, 7, 3])
    middle = ji.objectives.neuron("encoder/layers/encoder_layer_1", 3)
    np.testing.assert_allclose(middle(feats), feats["encoder/layers/encoder_layer_1"][:, 32, 3])
    with pytest.raises(ji.rules.UnsupportedReLU, match="no ReLU"):
        ji.visualize(jm, unit, steps=2, size=64, redirect_relu=True)
