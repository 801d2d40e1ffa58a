"""An operator between rounds of epochs inside one training program (gdl.Between)."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import genetic_dl as gdl
from genetic_dl.core import train as train_mod


def _to_member_0(population, weight):
    """Every member moved a fraction ``weight`` of the way to member 0's params."""
    return population.replace(params=jax.tree_util.tree_map(
        lambda p: (1 - weight) * p + weight * p[:1], population.params))


BETWEEN = gdl.Between(2, _to_member_0)


def test_rounds_run_the_operator_after_each_and_a_new_argument_compiles_nothing(iris):
    pop = gdl.init_population(jax.random.key(0), gdl.MLPSpec((8,)), iris, 4)
    out, hist = gdl.train(pop, iris, 3, batch_size=16, between=BETWEEN,
                          between_arg=np.float32(1.0))
    assert np.asarray(hist["train_loss"]).shape == (4, 3)  # the rounds' epochs, in order
    for leaf in jax.tree_util.tree_leaves(out.params):  # the last round ends with the operator
        np.testing.assert_array_equal(leaf, jnp.broadcast_to(leaf[:1], leaf.shape))
    compiled = train_mod._train._cache_size()  # pylint: disable=protected-access
    kept, _ = gdl.train(pop, iris, 3, batch_size=16, between=BETWEEN,
                        between_arg=np.float32(0.0))
    assert train_mod._train._cache_size() == compiled  # pylint: disable=protected-access
    plain, _ = gdl.train(pop, iris, 3, batch_size=16)
    for a, b in zip(jax.tree_util.tree_leaves(kept.params),
                    jax.tree_util.tree_leaves(plain.params)):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)  # weight 0: plain training


def test_a_stream_with_rounds_is_refused_with_one_line(iris):
    pop = gdl.init_population(jax.random.key(0), gdl.MLPSpec((8,)), iris, 2)
    with pytest.raises(ValueError, match="need a Dataset, not a Stream") as err:
        gdl.train(pop, gdl.Stream.from_dataset(iris, 16), 2, between=BETWEEN,
                  between_arg=np.float32(1.0))
    assert "\n" not in str(err.value)
