"""Your own flax model trained as a population from one shared start, with PAPA's pull toward
the population's mean after every epoch, against the same run without it at equal
network-epochs, then a model soup chosen on validation: python examples/recombination.py"""
import argparse

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

import genetic_dl as gdl


class MLP(nn.Module):
    """A small MLP with LayerNorm."""
    width: int = 64

    @nn.compact
    def __call__(self, x):
        x = nn.relu(nn.LayerNorm()(nn.Dense(self.width)(x.reshape((x.shape[0], -1)))))
        return nn.Dense(10)(x)


def loss(logits, batch):
    return optax.softmax_cross_entropy_with_integer_labels(logits, batch["y"]).mean()


def accuracy(logits, batch):
    return jnp.mean(jnp.argmax(logits, -1) == batch["y"])


def main(argv=None):
    """Trains with and without the pull; returns ``(results, test accuracies, soups)``."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="a smaller run (seconds)")
    parser.add_argument("--rate", type=float, default=None,
                        help="the pull toward the mean per epoch (default 0.5; 1: the mean)")
    args = parser.parse_args(argv)
    data = gdl.load_dataset("digits")  # 8x8 digits, bundled
    size, generations, epochs, width = (4, 2, 1, 16) if args.quick else (8, 5, 2, 64)
    learner = gdl.Learner.from_linen(MLP(width), loss=loss, metrics={"accuracy": accuracy})
    pop = gdl.init_population(jax.random.key(0), learner, data, size=size,
                              hparams={"learning_rate": 3e-3})
    results, tests = {}, {}
    for method in ("pull", "none"):  # rule "none": no GA step, training and mixing only
        config = gdl.WeightGAConfig(rule="none", shared_start=True, recombination=method,
                                    recombination_rate=args.rate if method == "pull" else None,
                                    recombination_period=1)
        result = gdl.evolve_weights(jax.random.key(1), pop, data, generations=generations,
                                    epochs=epochs, config=config, fitness="accuracy")
        tests[method] = result.best_member.evaluate(data, "test")["accuracy"]
        print(f"recombination {method}: {result.history[-1]['network_epochs']} network-epochs, "
              f"best validation accuracy {result.best_fitness:.3f}, "
              f"its test accuracy {tests[method]:.3f}")
        results[method] = result
    soups = gdl.soups(results["pull"], data, fitness="accuracy")
    print(f"soups of the pull run: chose {soups.chosen_name} (validation accuracy "
          f"{soups.fitness[soups.chosen_name]:.3f}, the ensemble's "
          f"{soups.fitness['ensemble']:.3f}), its test accuracy "
          f"{soups.test_metrics(data)['accuracy']:.3f}")
    return results, tests, soups


if __name__ == "__main__":
    gdl.use_host_devices()
    main()
