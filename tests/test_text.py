"""Decoders and token attribution: logits and greedy generation equal Hugging Face's
`GPT2LMHeadModel` on the same random weights (imported from `save_pretrained` files), and the
token attributions equal Captum's `LLMGradientAttribution` / `LLMAttribution` on that twin in
float64; AttnLRP / CP-LRP equal LXT's own GPT-2 patches (slow, in a subprocess: they patch
transformers' classes)."""

import contextlib
import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxinterp as ji
from jaxinterp import text

torch = pytest.importorskip("torch")


@contextlib.contextmanager
def hidden_torchvision():
    """The grad-cam / zennit shims register stand-in `torchvision` modules without a spec, on
    which `importlib.util.find_spec` (transformers' availability check) raises: hide them."""
    hidden = {k: sys.modules.pop(k) for k in list(sys.modules) if k.split(".")[0] == "torchvision"
              and getattr(sys.modules[k], "__spec__", None) is None}
    try:
        yield
    finally:
        sys.modules.update(hidden)


with hidden_torchvision():
    transformers = pytest.importorskip("transformers")
    from transformers.utils import import_utils

    import_utils.is_torchvision_available()  # cached: False here


@pytest.fixture(autouse=True)
def _no_stand_ins():
    with hidden_torchvision():
        yield

VOCAB, PROMPT, TARGET = 53, [7, 21, 3, 44, 12, 30], [9, 17, 2]


def twin(tmp, n_layer=2, n_embd=32, seed=0):
    """A random HF GPT-2 saved with `save_pretrained`, and jaxinterp's import of it."""
    transformers.logging.set_verbosity_error()
    torch.manual_seed(seed)
    cfg = transformers.GPT2Config(vocab_size=VOCAB, n_positions=24, n_embd=n_embd,
                                  n_layer=n_layer, n_head=4, bos_token_id=0, eos_token_id=0,
                                  attn_implementation="eager")  # sdpa returns no attentions
    tm = transformers.GPT2LMHeadModel(cfg).eval()
    with torch.no_grad():  # HF zeros the biases and keeps LN at 1 / 0: give every parameter a part
        for name, p in tm.named_parameters():
            if name.endswith("bias") or "ln" in name:
                p.add_(0.1 * torch.randn_like(p))
    tm.save_pretrained(tmp)
    return tm, ji.import_weights(tmp, arch="gpt2")


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    return twin(tmp_path_factory.mktemp("gpt2"))


def as64(m):
    return text.LanguageModel(m.module, jax.tree_util.tree_map(
        lambda a: jnp.asarray(a, jnp.float64), m.params), m.tokenizer, m.arch)


class IdTokenizer:
    """What Captum's `TextTokenInput` / LLM classes call on a tokenizer, for fixed ids."""

    def __init__(self, ids):
        self.ids = list(ids)

    def encode(self, text, return_tensors=None, add_special_tokens=True):
        return torch.tensor([self.ids]) if return_tensors == "pt" else list(self.ids)

    def convert_ids_to_tokens(self, ids):
        return [f"t{int(i)}" for i in ids] if hasattr(ids, "__iter__") else f"t{int(ids)}"

    def convert_tokens_to_ids(self, tokens):
        return [int(t[1:]) for t in tokens]

    def decode(self, ids, **kw):
        return " ".join(f"t{int(i)}" for i in ids)

    def __call__(self, text, **kw):  # re-encodes `decode`'s text, with offsets
        import re

        words = list(re.finditer(r"t(\d+)", text))
        return {"input_ids": [int(w.group(1)) for w in words],
                "offset_mapping": [w.span() for w in words]}


@pytest.mark.parametrize("n_layer", [2, pytest.param(12, marks=pytest.mark.slow)])
def test_logits_equal_transformers(tmp_path, n_layer):
    tm, m = twin(tmp_path, n_layer=n_layer)
    ids = np.random.default_rng(1).integers(0, VOCAB, (3, 17))
    with torch.no_grad():
        ref = tm(torch.tensor(ids)).logits.numpy()
    logits, feats = m(ids)
    assert np.abs(np.asarray(logits) - ref).max() <= 1e-4 * np.abs(ref).max()
    with torch.no_grad():
        att = tm(torch.tensor(ids), output_attentions=True).attentions
    assert len(att) == n_layer
    for i, a in enumerate(att):
        np.testing.assert_allclose(feats[f"h.{i}.attn.probs"], a.numpy(), atol=1e-5)


def test_import_reports_mismatch_and_round_trips(tmp_path, pair):
    tm, m = pair
    state = {k: v.numpy() for k, v in tm.state_dict().items() if "lm_head" not in k}
    from safetensors.numpy import save_file

    bad = dict(state)
    bad["transformer.h.0.mlp.c_fc.weight"] = bad["transformer.h.0.mlp.c_fc.weight"][:, :5]
    bad["transformer.h.9.extra"] = np.zeros(3, np.float32)
    del bad["transformer.ln_f.bias"]
    save_file(bad, str(tmp_path / "bad.safetensors"))
    (tmp_path / "config.json").write_text(json.dumps(tm.config.to_dict()))
    with pytest.raises(ji.CheckpointError) as e:
        ji.import_weights(tmp_path / "bad.safetensors", arch="gpt2")
    msg = str(e.value)
    assert "missing transformer/ln_f/bias" in msg and "unexpected transformer/h/9/extra" in msg
    assert "h/0/mlp/c_fc/weight: file has (32, 5)" in msg
    ji.save_model(m, tmp_path / "ck")
    back = ji.load_model(tmp_path / "ck")
    ids = np.arange(12)[None] % VOCAB
    np.testing.assert_array_equal(back(ids)[0], m(ids)[0])


def test_generate_equals_transformers_greedy(pair):
    tm, m = pair
    ids = np.random.default_rng(2).integers(1, VOCAB, (2, 5))
    with torch.no_grad():
        ref = tm.generate(torch.tensor(ids), max_new_tokens=7, do_sample=False,
                          attention_mask=torch.ones(2, 5, dtype=torch.long),
                          pad_token_id=0).numpy()
    np.testing.assert_array_equal(text.generate(m, ids, 7), ref)
    np.testing.assert_array_equal(text.generate(m, ids[0], 7), ref[0])
    with pytest.raises(ValueError, match="exceed the model's 24 positions"):
        text.generate(m, ids, 20)


def captum_gradient(tm, method_cls, **kw):
    from captum.attr import LLMGradientAttribution, TextTokenInput

    tok = IdTokenizer(PROMPT)
    attr = LLMGradientAttribution(method_cls(tm, tm.transformer.wte), tok)
    res = attr.attribute(TextTokenInput("x", tok), target=torch.tensor(TARGET), **kw)
    return res.seq_attr.numpy(), res.token_attr.numpy()


def captum_perturbation(tm, method_cls, prompt=PROMPT, **kw):
    from captum.attr import LLMAttribution, TextTokenInput

    tok = IdTokenizer(prompt)
    res = LLMAttribution(method_cls(tm), tok).attribute(
        TextTokenInput("x", tok), target=torch.tensor(TARGET), **kw)
    return res.seq_attr.numpy(), None if res.token_attr is None else res.token_attr.numpy()


@pytest.fixture(scope="module")
def pair64(pair):
    tm, m = pair
    return tm.double(), m


def test_captum_layer_integrated_gradients_and_input_x_gradient(pair64):
    from captum.attr import LayerGradientXActivation, LayerIntegratedGradients

    tm, m = pair64
    with jax.enable_x64(True):
        m64 = as64(m)
        for ours, theirs in (("integrated_gradients", LayerIntegratedGradients),
                             ("input_x_gradient", LayerGradientXActivation)):
            seq, tok = captum_gradient(tm, theirs)
            got = np.asarray(text.attribute(m64, PROMPT, TARGET, method=ours, per_token=True))
            np.testing.assert_allclose(got, tok, rtol=1e-5, atol=1e-8 * np.abs(tok).max())
            np.testing.assert_allclose(text.attribute(m64, PROMPT, TARGET, method=ours), seq,
                                       rtol=1e-5, atol=1e-8 * np.abs(seq).max())


def test_captum_feature_ablation_and_exact_shapley(pair64):
    from captum.attr import FeatureAblation, ShapleyValues

    tm, m = pair64
    with jax.enable_x64(True):
        m64 = as64(m)
        for ours, theirs, prompt in (("feature_ablation", FeatureAblation, PROMPT),
                                     ("shapley_values", ShapleyValues, PROMPT[:4])):
            # Captum's token-by-token forward without its KV-cache path: with
            # use_cached_outputs=True (its default) Captum 0.9 on transformers 5 gives the
            # second and later target tokens other values than both its uncached and its
            # one-pass (`forward_in_tokens=False`) forwards, which agree with each other and
            # with these
            seq, tok = captum_perturbation(tm, theirs, prompt, use_cached_outputs=False)
            got = np.asarray(text.attribute(m64, prompt, TARGET, method=ours, per_token=True))
            np.testing.assert_allclose(got, tok, rtol=1e-5, atol=1e-9)
            np.testing.assert_allclose(got.sum(0), seq, rtol=1e-5, atol=1e-9)
        # exact Shapley values are efficient: they add up to score(prompt) - score(all baseline)
        phi = text.attribute(m64, PROMPT, TARGET, method="shapley_values")
        full = text.attribute(m64, PROMPT, TARGET, method="feature_ablation",
                              feature_mask=np.zeros(len(PROMPT), int))
        np.testing.assert_allclose(phi.sum(), full[0], rtol=1e-9)


def test_sampled_methods_approach_exact_shapley(pair):
    """Shapley sampling with every permutation of 4 grouped features is exact; KernelSHAP with
    many coalitions from the Shapley kernel approaches the exact values."""
    import itertools

    _, m = pair
    groups = np.array([0, 0, 1, 2, 3, 3])
    exact = np.asarray(text.attribute(m, PROMPT, TARGET, method="shapley_values",
                                      feature_mask=groups))
    perms = np.array(list(itertools.permutations(range(4))))
    sampled = text.attribute(m, PROMPT, TARGET, method="shapley_sampling", feature_mask=groups,
                             permutations=perms)
    np.testing.assert_allclose(sampled, exact, rtol=1e-4, atol=1e-5)
    kernel = text.attribute(m, PROMPT, TARGET, method="kernel_shap", feature_mask=groups,
                            samples=3000, key=jax.random.key(0))
    assert np.abs(np.asarray(kernel) - exact).max() < 0.1 * np.abs(exact).max()
    lime = text.attribute(m, PROMPT, TARGET, method="lime", samples=400, alpha=0.0,
                          feature_mask=groups, key=jax.random.key(1))
    assert np.corrcoef(np.asarray(lime)[[0, 2, 3, 4]], exact[[0, 2, 3, 4]])[0, 1] > 0.9


def test_rollout_equals_numpy_transcription(pair):
    tm, m = pair
    ids = PROMPT + TARGET
    with torch.no_grad():
        att = [a[0].numpy().astype(np.float64) for a in
               tm(torch.tensor([ids]).long(), output_attentions=True).attentions]
    assert len(att) == 2
    r = np.eye(len(ids))
    for a in att:
        a = a.mean(0) + np.eye(len(ids))
        r = (a / a.sum(-1, keepdims=True)) @ r
    want = r[len(PROMPT) - 1:len(ids) - 1, :len(PROMPT)]
    got = text.attribute(m, PROMPT, TARGET, method="attention_rollout", per_token=True)
    np.testing.assert_allclose(got, want, atol=1e-5)


def test_batch_equals_single_and_jit(pair):
    _, m = pair
    prompts = np.random.default_rng(3).integers(1, VOCAB, (3, 6))
    targets = np.random.default_rng(4).integers(1, VOCAB, (3, 2))
    for method in ("integrated_gradients", "feature_ablation", "lrp"):
        batch = np.asarray(text.attribute(m, prompts, targets, method=method, steps=8))
        one = np.asarray(text.attribute(m, prompts[1], targets[1], method=method, steps=8))
        np.testing.assert_allclose(batch[1], one, rtol=1e-4, atol=1e-6)
    f = jax.jit(lambda m, p, t: text.attribute(m, p, t, method="saliency"))
    np.testing.assert_allclose(f(m, prompts, targets),
                               text.attribute(m, prompts, targets, method="saliency"), rtol=1e-5)


def test_integrated_gradients_completeness(pair):
    """IG over the prompt embeddings sums to score(prompt) - score(baseline prompt)."""
    _, m = pair
    with jax.enable_x64(True):
        m64 = as64(m)
        ig = text.attribute(m64, PROMPT, TARGET, steps=64, baseline=5)
        base = [5] * len(PROMPT)
        lp = lambda p: jax.nn.log_softmax(m64(p + TARGET)[0][0, len(p) - 1:-1])[  # noqa: E731
            np.arange(3), TARGET].sum()
        np.testing.assert_allclose(ig.sum(), lp(PROMPT) - lp(base), rtol=1e-6)


def test_clear_errors(pair):
    _, m = pair
    with pytest.raises(ValueError, match="method must be one of"):
        text.attribute(m, PROMPT, TARGET, method="grad_cam")
    with pytest.raises(ValueError, match="per_token is not available"):
        text.attribute(m, PROMPT, TARGET, method="lime", per_token=True)
    with pytest.raises(ValueError, match=r"token ids must be in \[0, 53\)"):
        text.attribute(m, PROMPT, [99], method="saliency")
    with pytest.raises(TypeError, match="token ids must be integers"):
        m(np.zeros((1, 3)))
    with pytest.raises(ValueError, match="2 prompts but 3 targets"):
        text.attribute(m, [PROMPT, PROMPT], [TARGET] * 3)


LXT = r"""
import importlib.util, json, sys, types
import numpy as np, torch, transformers
sys.path.insert(0, "tests")
from lxt_shim import import_lxt
root = importlib.util.find_spec("lxt").submodule_search_locations[0]
import_lxt()
pkg = types.ModuleType("lxt.efficient.models"); pkg.__path__ = [root + "/efficient/models"]
sys.modules["lxt.efficient.models"] = pkg
from lxt.efficient.models import gpt2 as lxt_gpt2
tm = transformers.GPT2LMHeadModel.from_pretrained(sys.argv[1], attn_implementation="eager").double()
ids = torch.tensor([json.loads(sys.argv[2])])
tp = int(sys.argv[3])
from transformers.models.gpt2 import modeling_gpt2
interface = modeling_gpt2.ALL_ATTENTION_FUNCTIONS
for target, patch in getattr(lxt_gpt2, sys.argv[4]).items():
    patch(target)
# LXT 2.1's attnLRP patch replaces transformers' attention registry with a plain dict, which
# transformers 5 can no longer call (`get_interface`): put its wrapped functions back in the
# registry, as LXT's own commented-out line does (CP-LRP's patch already does this)
if modeling_gpt2.ALL_ATTENTION_FUNCTIONS is not interface:
    for k, v in modeling_gpt2.ALL_ATTENTION_FUNCTIONS.items():
        interface[k] = v
    modeling_gpt2.ALL_ATTENTION_FUNCTIONS = interface
emb = tm.get_input_embeddings()(ids).detach().requires_grad_(True)
logits = tm(inputs_embeds=emb).logits[0]
score = sum(logits[tp - 1 + j, ids[0, tp + j]] for j in range(ids.shape[1] - tp))
score.backward()
print(json.dumps((emb * emb.grad).sum(-1)[0, :tp].tolist()))
"""


@pytest.mark.slow
@pytest.mark.parametrize("composite,patch", [("attn_lrp", "attnLRP"), ("cp_lrp", "cp_LRP")])
def test_lrp_equals_lxt_gpt2_patches(tmp_path, composite, patch):
    pytest.importorskip("lxt")
    _, m = twin(tmp_path)
    r = subprocess.run([sys.executable, "-c", LXT, str(tmp_path), json.dumps(PROMPT + TARGET),
                        str(len(PROMPT)), patch], capture_output=True, text=True,
                       cwd=os.path.dirname(os.path.dirname(__file__)))
    assert r.returncode == 0, r.stderr[-3000:]
    want = np.array(json.loads(r.stdout.strip().splitlines()[-1]))
    with jax.enable_x64(True):
        got = text.attribute(as64(m), PROMPT, TARGET, method="lrp", composite=composite)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-9 * np.abs(want).max())


def test_text_heatmap_escapes_and_scales(tmp_path):
    html = ji.viz.text_heatmap(["<b>", "&", "x"], [[2.0, -1.0, 0.0]], rows=["<t>"], title="a<b",
                               path=tmp_path / "h.html")
    assert "<b>" not in html.replace("<b style", "") and "&lt;b&gt;" in html
    assert "&lt;t&gt;" in html and "a&lt;b" in html
    assert "rgba(220,40,40,1.000)" in html and "rgba(40,80,220,0.500)" in html
    assert (tmp_path / "h.html").read_text().startswith("<!doctype html>")
    ji.viz.text_heatmap(["a", "b"], [1.0, -0.5], path=tmp_path / "h.png")
    assert (tmp_path / "h.png").read_bytes()[:4] == b"\x89PNG"
    with pytest.raises(ValueError, match="scores must be"):
        ji.viz.text_heatmap(["a"], [1.0, 2.0])
    with pytest.raises(FileExistsError):
        ji.viz.text_heatmap(["a", "b"], [1.0, -0.5], path=tmp_path / "h.png")


def test_cli_text_writes_heat_maps(tmp_path):
    from jaxinterp.cli import main

    tok = text.Tokenizer(["<unk>", "a", "b", "=", "1", "2", ";", "?"])
    m = text.init_language_model("lm-mini", 3, tokenizer=tok, vocab_size=8, n_positions=16,
                                 n_embd=32)
    ji.save_model(m, tmp_path / "lm")
    out = tmp_path / "out"
    assert main(["text", "--model", str(tmp_path / "lm"), "--prompt", "a=1 b=2 ; a ?",
                 "--target", "1 2", "--method", "ig,attn_lrp,lime", "--out", str(out)]) == 0
    got = json.loads((out / "attributions.json").read_text())
    assert got["prompt"] == ["a", "=", "1", "b", "=", "2", ";", "a", "?"]
    assert got["target"] == ["1", "2"]
    ig = np.asarray(text.attribute(m, tok.encode("a=1 b=2 ; a ?"), tok.encode("1 2"),
                                   per_token=True))
    np.testing.assert_allclose(got["methods"]["integrated_gradients"]["scores"], ig, rtol=1e-5)
    assert np.shape(got["methods"]["lime"]["scores"]) == (9,)
    for name in ("integrated_gradients", "attn_lrp", "lime"):
        assert (out / f"{name}.html").exists() and (out / f"{name}.png").exists()
    assert main(["text", "--model", str(tmp_path / "lm"), "--prompt", "a=1 z", "--out",
                 str(tmp_path / "o2")]) == 2  # an unknown word: a usage error, nothing written
    assert not (tmp_path / "o2").exists()


def test_wrapped_function_equals_the_model(pair):
    """`text.wrap(fn, params)` finds the embedding lookup in the traced function: every method
    gives what the same decoder gives as jaxinterp's GPT-2 (lrp: AttnLRP / CP-LRP's rules found
    in the traced graph against the ones written into jaxinterp's GPT-2), and generation too."""
    _, m = pair
    module = m.module

    def fn(params, ids):  # a user's decoder: only logits out, lookup inside
        return jax.jit(lambda p, i: module.apply({"params": p}, i)[0])(params, ids)

    w = text.wrap(fn, m.params, max_positions=24)
    assert w.module.table == ("transformer", "wte", "weight") and "wrapped" in repr(w)
    for method in ("integrated_gradients", "saliency", "feature_ablation", "attention_rollout"):
        kw = {"steps": 8} if method == "integrated_gradients" else {}
        np.testing.assert_allclose(
            text.attribute(w, PROMPT, TARGET, method=method, per_token=True, **kw),
            text.attribute(m, PROMPT, TARGET, method=method, per_token=True, **kw),
            rtol=1e-4, atol=1e-6)
    for composite in ("attn_lrp", "cp_lrp"):
        want = np.asarray(text.attribute(m, PROMPT, TARGET, method="lrp", composite=composite,
                                         per_token=True))
        np.testing.assert_allclose(
            text.attribute(w, PROMPT, TARGET, method="lrp", composite=composite,
                           per_token=True), want, rtol=0, atol=1e-4 * np.abs(want).max())
    np.testing.assert_array_equal(text.generate(w, PROMPT, 5), text.generate(m, PROMPT, 5))
    with pytest.raises(ValueError, match="is not a parameter path"):
        text.wrap(fn, m.params, embedding="transformer/nope")
    with pytest.raises(ValueError, match="no token-embedding lookup found"):
        text.wrap(lambda p, i: jnp.zeros((*i.shape, 3)) + p["w"].sum(), {"w": jnp.ones((3, 2))})


def test_wrapped_linen_decoder_ig_is_complete():
    """A user's own linen decoder (nn.Embed + causal attention via nn.MultiHeadDotProductAttention):
    IG sums to the score difference, rollout finds its softmax."""
    import flax.linen as nn

    class Tiny(nn.Module):
        @nn.compact
        def __call__(self, ids):
            x = nn.Embed(11, 16)(ids)
            mask = nn.make_causal_mask(ids)
            x = x + nn.MultiHeadDotProductAttention(2)(x, x, mask=mask)
            return nn.Dense(11)(nn.gelu(x))

    ids = jnp.array([[3, 1, 4, 1, 5, 9, 2]])
    net = Tiny()
    params = net.init(jax.random.key(0), ids)
    w = text.wrap(lambda p, i: net.apply(p, i), params)
    assert w.module.table == ("params", "Embed_0", "embedding")
    with jax.enable_x64(True):
        p64 = jax.tree_util.tree_map(lambda a: jnp.asarray(a, jnp.float64), params)
        w64 = text.wrap(lambda p, i: net.apply(p, i), p64)
        ig = text.attribute(w64, [3, 1, 4, 1, 5], [9, 2], steps=16, baseline=0)
        lp = lambda p: jax.nn.log_softmax(net.apply(p64, jnp.array([p + [9, 2]]))[  # noqa: E731
            0, len(p) - 1:-1])[np.arange(2), [9, 2]].sum()
        np.testing.assert_allclose(ig.sum(), lp([3, 1, 4, 1, 5]) - lp([0] * 5), rtol=1e-6)
    ro = text.attribute(w, [3, 1, 4, 1, 5], [9, 2], method="attention_rollout", per_token=True)
    assert ro.shape == (2, 5) and np.all(np.asarray(ro) > 0)


def test_hugging_face_tokenizer_json_is_attached_and_stored(tmp_path, pair):
    tokenizers = pytest.importorskip("tokenizers")
    tm, _ = pair
    vocab = {f"w{i}": i for i in range(VOCAB)}
    hf = tokenizers.Tokenizer(tokenizers.models.WordLevel(vocab, unk_token="w0"))
    hf.pre_tokenizer = tokenizers.pre_tokenizers.Whitespace()
    tm.save_pretrained(tmp_path)
    hf.save(str(tmp_path / "tokenizer.json"))
    m = ji.import_weights(tmp_path, arch="gpt2", out=tmp_path / "ck")
    assert m.tokenizer.encode("w7 w21 w3") == [7, 21, 3]
    back = ji.load_model(tmp_path / "ck")
    assert back.tokenizer.encode("w7 w21 w3") == [7, 21, 3]
    assert back.tokenizer.tokens([7, 21]) == ["w7", "w21"] and len(back.tokenizer) == VOCAB


SHARDED = """
import json
import jax, numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
import jaxinterp as ji
m = ji.load_model("gpt2", key=0, n_layer=2, n_embd=32, n_head=4, vocab_size=40, n_positions=16)
prompts = np.random.default_rng(0).integers(1, 40, (4, 6))
targets = np.random.default_rng(1).integers(1, 40, (4, 2))
mesh = Mesh(np.array(jax.devices()), ("batch",))
put = lambda a: jax.device_put(a, NamedSharding(mesh, P("batch")))
out = {}
for method in ("integrated_gradients", "feature_ablation", "shapley_sampling", "lrp"):
    ref = np.asarray(ji.text.attribute(m, prompts, targets, method=method, steps=8))
    got = ji.text.attribute(m, put(prompts), put(targets), method=method, steps=8)
    out[method] = [float(np.abs(np.asarray(got) - ref).max() / np.abs(ref).max()),
                   len(got.sharding.device_set)]
print(json.dumps(out))
"""


@pytest.mark.slow
def test_sharded_prompts_equal_unsharded():
    from devices import run_on_devices

    r = run_on_devices(SHARDED)
    assert r.returncode == 0, r.stderr[-3000:]
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert set(out) == {"integrated_gradients", "feature_ablation", "shapley_sampling", "lrp"}
    assert all(err < 1e-5 for err, _ in out.values()), out
    assert all(devices == 4 for _, devices in out.values()), out  # the result stays sharded
