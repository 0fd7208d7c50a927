"""`rules.rewrite` gives the rule to activation ReLUs only: the variance clamps of normalization
layers (`max(0, E[x²] − E[x]²)` before an `rsqrt`) keep their gradient."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxinterp as ji
from jaxinterp import rules

SIZE = 12


class NormCNN(nn.Module):
    """Conv → LayerNorm → ReLU → Conv → GroupNorm → ReLU → RMSNorm → GAP → Dense; `act` is the
    activation (nn.relu, or a rule written by hand)."""

    act: object = nn.relu

    @nn.compact
    def __call__(self, x):
        x = self.act(nn.LayerNorm()(nn.Conv(6, (3, 3))(x)))
        x = self.act(nn.GroupNorm(num_groups=2)(nn.Conv(8, (3, 3))(x)))
        x = nn.RMSNorm()(x)
        return nn.Dense(5)(jax.nn.standardize(x.mean((1, 2)), axis=-1))


@pytest.fixture(scope="session")
def norm_cnn():
    x = jax.random.uniform(jax.random.key(5), (3, SIZE, SIZE, 3))
    variables = NormCNN().init(jax.random.key(1), x[:1])
    return variables, x, jnp.array([0, 3, 2])


def test_count_relus_skips_variance_clamps(norm_cnn):
    variables, x, _ = norm_cnn
    jaxpr = jax.make_jaxpr(lambda v, x: NormCNN().apply(v, x))(variables, x)
    maxes = str(jaxpr).count(" max ")
    assert maxes >= 4  # two activations, LayerNorm's and GroupNorm's clamps, standardize's clip
    assert rules.count_relus(jaxpr) == 2
    # the same clamp used as an activation (its result reaches the output) counts
    clamp = lambda v: jnp.maximum(0.0, v.mean() - v.mean() ** 2) * v  # noqa: E731
    assert rules.count_relus(jax.make_jaxpr(clamp)(x)) == 1
    assert rules.count_relus(jax.make_jaxpr(lambda v: jax.lax.rsqrt(clamp(v) + 1.0))(x)) == 0


@pytest.mark.parametrize("rule, method", [("guided", "guided_backprop"),
                                          ("deconv", "deconvnet")])
def test_norm_layers_keep_their_gradient(norm_cnn, rule, method):
    variables, x, y = norm_cnn
    kw = {"input_size": (SIZE, SIZE)}
    ours = np.asarray(ji.attribution.METHODS[method](ji.wrap(NormCNN(), variables, **kw), x, y))
    by_hand = np.asarray(ji.saliency(ji.wrap(NormCNN(rules.RULES[rule]), variables, **kw), x, y))
    plain = np.asarray(ji.saliency(ji.wrap(NormCNN(), variables, **kw), x, y))
    np.testing.assert_allclose(ours, by_hand, rtol=1e-6, atol=1e-6 * np.abs(by_hand).max())
    assert np.abs(ours - plain).max() > 0.1 * np.abs(plain).max()  # the rule did change it
