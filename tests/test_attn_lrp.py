"""AttnLRP / CP-LRP on any traced model (`jaxinterp.relevance.attn_lrp`): the rules found in the
graph equal LXT's rules written into the model by hand — on a user's Flax ViT (Flax's own
LayerNorm, attention and GELU, a gated MLP), on jaxinterp's ViT wrapped as a plain function, and
on a wrapped GPT-2 decoder (tests/test_text.py)."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxinterp as ji
from jaxinterp.models.vit import _identity_rule, divide_gradient
from jaxinterp.relevance import UnsupportedPrimitive

D, HEADS, HIDDEN, CLASSES = 16, 2, 24, 5


class UserViT(nn.Module):
    """A user's ViT from Flax's own parts. `lxt` = "attn_lrp" / "cp_lrp" writes LXT's rules
    into it by hand (the reference); None is the plain model the graph rules rewrite."""

    lxt: str | None = None

    def layer_norm(self, x, name):
        if self.lxt is None or self.is_initializing():
            return nn.LayerNorm(name=name)(x)  # Flax's: (x - mean) * rsqrt(E[x²] - mean² + eps)
        p = self.variables["params"][name]  # LXT: no gradient through the standard deviation
        mean = x.mean(-1, keepdims=True)
        var = jnp.maximum((x * x).mean(-1, keepdims=True) - mean * mean, 0)
        y = (x - mean) * jax.lax.stop_gradient(jax.lax.rsqrt(var + 1e-6))
        return y * p["scale"] + p["bias"]

    @nn.compact
    def __call__(self, x):
        x = nn.Conv(D, (4, 4), (4, 4), name="patches")(x)
        n = x.shape[0]
        x = x.reshape(n, -1, D)
        cls = self.param("cls", nn.initializers.normal(1.0), (1, 1, D))
        x = jnp.concatenate([jnp.broadcast_to(cls, (n, 1, D)), x], 1)
        for i in range(2):
            h = self.layer_norm(x, f"ln_a{i}")
            x = x + self.attention(h, i)
            h = self.layer_norm(x, f"ln_b{i}")
            if i == 0:  # a plain MLP: GELU (tanh form)
                a = nn.Dense(HIDDEN, name=f"fc{i}")(h)
                act = nn.gelu(a)
                if self.lxt is not None:
                    act = _identity_rule(a, act)
                x = x + nn.Dense(D, name=f"out{i}")(act)
            else:  # a gated MLP: silu(gate) * up
                gate, up = nn.Dense(HIDDEN, name="gate")(h), nn.Dense(HIDDEN, name="up")(h)
                if self.lxt == "cp_lrp":
                    gate = jax.lax.stop_gradient(gate)
                act = nn.silu(gate)
                if self.lxt is not None:
                    act = _identity_rule(gate, act)
                prod = act * up
                if self.lxt == "attn_lrp":
                    prod = divide_gradient(prod, 2.0)
                x = x + nn.Dense(D, name="down")(prod)
        return nn.Dense(CLASSES, name="head")(x[:, 0])

    def attention(self, h, i):
        if self.lxt is None or self.is_initializing():
            return nn.MultiHeadDotProductAttention(HEADS, name=f"attn{i}")(h, h)
        p = self.variables["params"][f"attn{i}"]
        q, k, v = (jnp.einsum("ntd,dhe->nthe", h, p[s]["kernel"]) + p[s]["bias"]
                   for s in ("query", "key", "value"))
        q = q / jnp.sqrt(q.shape[-1]).astype(q.dtype)
        if self.lxt == "attn_lrp":  # LXT's attention: q, k / 4; v / 2
            q, k, v = divide_gradient(q, 4.0), divide_gradient(k, 4.0), divide_gradient(v, 2.0)
        else:
            q, k = jax.lax.stop_gradient(q), jax.lax.stop_gradient(k)
        probs = jax.nn.softmax(jnp.einsum("nqhd,nkhd->nhqk", q, k), -1)
        out = jnp.einsum("nhqk,nkhd->nqhd", probs, v)
        return jnp.einsum("nqhd,hde->nqe", out, p["out"]["kernel"]) + p["out"]["bias"]


@pytest.fixture(scope="module")
def user_vit():
    with jax.enable_x64(True):
        x = np.random.default_rng(5).random((2, 16, 16, 3))
        variables = UserViT().init(jax.random.key(1), x)
        variables = jax.tree_util.tree_map(lambda a: jnp.asarray(a, jnp.float64), variables)
        yield variables, x, np.array([3, 1])


def _reference(variables, x, t, mode):
    """LXT's Gradient*Input with the rules written into the model: x * grad."""
    module = UserViT(lxt=mode)

    def score(x):
        return jnp.take_along_axis(module.apply(variables, x), t[:, None], 1).sum()

    return x * jax.grad(score)(x)


@pytest.mark.parametrize("mode", ["attn_lrp", "cp_lrp"])
def test_graph_rules_equal_lxt_written_into_a_users_flax_vit(user_vit, mode):
    variables, x, t = user_vit
    with jax.enable_x64(True):
        m = ji.wrap(UserViT(), variables, input_size=(16, 16))
        np.testing.assert_allclose(  # the hand-written model computes the same logits
            UserViT(lxt=mode).apply(variables, x), m(x)[0], rtol=1e-12)
        want = np.asarray(_reference(variables, x, t, mode))
        got = np.asarray(ji.lrp(m, x, t, composite=mode, start="logit"))
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-12 * np.abs(want).max())
        # start="one": the same, per example divided by the target's logit
        logit = np.asarray(m(x)[0])[np.arange(2), t]
        np.testing.assert_allclose(ji.lrp(m, x, t, composite=mode), want / logit[:, None, None,
                                   None], rtol=1e-10)
        # the plain gradient (no rules) is a different answer: the test can tell
        plain = np.asarray(ji.input_x_gradient(m, x, t))
        assert np.abs(plain - want).max() > 1e-3 * np.abs(want).max()


def test_graph_rules_equal_the_vit_module_rules():
    """jaxinterp's ViT wrapped as a plain function: the graph rules (normalized input, GELU,
    LayerNorm, attention) give what the ViT's own rule modules give."""
    with jax.enable_x64(True):
        jm = ji.load_model("vit-mini", key=0)
        jm = jm.with_variables(jax.tree_util.tree_map(lambda a: a.astype(jnp.float64),
                                                      jm.variables))
        x = np.random.default_rng(0).random((2, 64, 64, 3))
        t = np.array([1, 5])
        user = ji.wrap(jm.apply.module, jm.variables, input_size=(64, 64),
                       preprocess=jm.preprocess)
        for mode in ("attn_lrp", "cp_lrp"):
            want = np.asarray(ji.lrp(jm, x, t, composite=mode, start="logit"))
            got = np.asarray(ji.lrp(user, x, t, composite=mode, start="logit"))
            np.testing.assert_allclose(got, want, rtol=0, atol=1e-12 * np.abs(want).max())


def test_jit_vmap_and_unsupported_primitives(user_vit):
    variables, x, t = user_vit
    x32 = jnp.asarray(x, jnp.float32)
    m = ji.wrap(UserViT(), jax.tree_util.tree_map(lambda a: jnp.asarray(a, jnp.float32),
                                                  variables), input_size=(16, 16))
    eager = np.asarray(ji.lrp(m, x32, t, composite="attn_lrp"))
    jitted = np.asarray(jax.jit(lambda x: ji.lrp(m, x, t, composite="attn_lrp"))(x32))
    np.testing.assert_allclose(jitted, eager, rtol=1e-5, atol=1e-6 * np.abs(eager).max())
    one = np.asarray(ji.lrp(m, x32[1:], t[1:], composite="attn_lrp"))
    np.testing.assert_allclose(one, eager[1:], rtol=1e-4, atol=1e-5 * np.abs(eager).max())

    def sorted_net(params, x):  # a sort between input and logits: no rule for it
        h = jnp.sort(x.reshape(x.shape[0], -1) @ params["w"], axis=-1)
        return h @ params["v"]

    p = {"w": jnp.ones((16 * 16 * 3, 4)) / 100, "v": jnp.ones((4, 3))}
    bad = ji.wrap(sorted_net, p, input_size=(16, 16))
    with pytest.raises(UnsupportedPrimitive, match="sort"):
        ji.lrp(bad, x32, [0, 1], composite="attn_lrp")
