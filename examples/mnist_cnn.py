"""The flax MNIST example's CNN, evolved with unit-moving crossovers and no hand-written
permutation spec: python examples/mnist_cnn.py [--quick]"""
import argparse

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

import genetic_dl as gdl


class CNN(nn.Module):
    """flax's examples/mnist model (conv 32, conv 64, dense 256), widths scalable."""
    width: int = 32

    @nn.compact
    def __call__(self, x):
        x = x[..., None] if x.ndim == 3 else x
        x = nn.avg_pool(nn.relu(nn.Conv(self.width, (3, 3))(x)), (2, 2), (2, 2))
        x = nn.avg_pool(nn.relu(nn.Conv(2 * self.width, (3, 3))(x)), (2, 2), (2, 2))
        x = nn.relu(nn.Dense(8 * self.width)(x.reshape((x.shape[0], -1))))
        return nn.Dense(10)(x)


def loss(logits, batch):
    return optax.softmax_cross_entropy_with_integer_labels(logits, batch["y"]).mean()


def accuracy(logits, batch):
    return jnp.mean(jnp.argmax(logits, -1) == batch["y"])


def learner(width: int) -> gdl.Learner:
    """The CNN with its loss and accuracy; its permutation spec is derived."""
    return gdl.Learner.from_linen(CNN(width), loss=loss, metrics={"accuracy": accuracy})


def main(argv=None):
    """Derives and prints the spec, then evolves with per-neuron and aligned crossover."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="a smaller run (seconds)")
    args = parser.parse_args(argv)
    data = gdl.load_dataset("digits")  # 8x8 digits, bundled
    size, generations, width = (4, 2, 4) if args.quick else (8, 6, 32)
    pop = gdl.init_population(jax.random.key(0), learner(width), data, size=size,
                              hparams={"learning_rate": 3e-3})
    print(gdl.permutation.describe(pop))  # the derived spec: edit it into permutation_spec=
    results = {}
    for crossover in ("per_neuron", "aligned"):
        result = gdl.evolve_weights(jax.random.key(1), pop, data, generations=generations,
                                    epochs=1, config=gdl.WeightGAConfig(crossover=crossover),
                                    fitness="accuracy")
        test = result.best_member.evaluate(data, "test")["accuracy"]
        print(f"{crossover}: best validation accuracy {result.best_fitness:.3f}, "
              f"its test accuracy {test:.3f}")
        results[crossover] = result
    return results


if __name__ == "__main__":
    gdl.use_host_devices()
    main()
