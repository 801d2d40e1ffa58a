"""A two-block ResNet with BatchNorm, dropout and skip connections, evolved with
unit-moving crossovers and no hand-written permutation spec: the residual adds tie
the blocks' outputs to one group, derived from the model's computation.
python examples/resnet_bn.py [--quick]"""
import argparse

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

import genetic_dl as gdl


class Block(nn.Module):
    """conv-BN-relu-dropout-conv-BN, added onto the input."""
    width: int

    @nn.compact
    def __call__(self, x, train: bool):
        y = nn.Conv(self.width, (3, 3), use_bias=False)(x)
        y = nn.relu(nn.BatchNorm(use_running_average=not train)(y))
        y = nn.Dropout(0.1, deterministic=not train)(y)
        y = nn.Conv(self.width, (3, 3), use_bias=False)(y)
        return nn.relu(x + nn.BatchNorm(use_running_average=not train)(y))


class ResNet(nn.Module):
    """A stem convolution, two residual blocks, global average pooling, a linear head."""
    width: int = 32

    @nn.compact
    def __call__(self, x, train: bool):
        x = x[..., None] if x.ndim == 3 else x
        x = nn.relu(nn.Conv(self.width, (3, 3))(x))
        x = Block(self.width)(x, train)
        x = Block(self.width)(x, train)
        return nn.Dense(10)(x.mean(axis=(1, 2)))


def loss(logits, batch):
    return optax.softmax_cross_entropy_with_integer_labels(logits, batch["y"]).mean()


def accuracy(logits, batch):
    return jnp.mean(jnp.argmax(logits, -1) == batch["y"])


def learner(width: int) -> gdl.Learner:
    """The ResNet with its BatchNorm statistics carried per member."""
    return gdl.Learner.from_linen(ResNet(width), loss=loss, metrics={"accuracy": accuracy},
                                  train_kwargs={"train": True}, eval_kwargs={"train": False},
                                  mutable=("batch_stats",))


def main(argv=None):
    """Derives and prints the spec, then evolves with per-neuron and aligned crossover."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="a smaller run (seconds)")
    args = parser.parse_args(argv)
    data = gdl.load_dataset("digits")
    size, generations, width = (4, 2, 4) if args.quick else (8, 6, 32)
    pop = gdl.init_population(jax.random.key(0), learner(width), data, size=size,
                              hparams={"learning_rate": 3e-3})
    print(gdl.permutation.describe(pop))
    results = {}
    for crossover in ("per_neuron", "aligned"):
        result = gdl.evolve_weights(jax.random.key(1), pop, data, generations=generations,
                                    epochs=1, config=gdl.WeightGAConfig(crossover=crossover),
                                    fitness="accuracy")
        test = result.best_member.evaluate(data, "test")["accuracy"]  # with its statistics
        print(f"{crossover}: best validation accuracy {result.best_fitness:.3f}, "
              f"its test accuracy {test:.3f}")
        results[crossover] = result
    return results


if __name__ == "__main__":
    gdl.use_host_devices()
    main()
