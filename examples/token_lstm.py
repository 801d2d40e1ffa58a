"""An embedding + LSTM sequence classifier on integer tokens (sst2-style), evolved with
unit-moving crossovers and no hand-written permutation spec: the embedding's features and
the cell's hidden units (gates tied, carries unified) are derived as groups.
python examples/token_lstm.py [--quick]"""
import argparse

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

import genetic_dl as gdl

VOCAB, LENGTH = 40, 12


class Classifier(nn.Module):
    """Embed the tokens, run an LSTM over them, classify from the last state."""
    width: int = 32

    @nn.compact
    def __call__(self, tokens):
        x = nn.Embed(VOCAB, self.width)(tokens)
        h = nn.RNN(nn.LSTMCell(self.width))(x)
        return nn.Dense(2)(h[:, -1])


def sentiment(n: int, seed: int):
    """Token sequences labelled 1 when 'positive' tokens (1-5) outnumber 'negative' ones
    (6-10); the other tokens are neutral words."""
    rng = np.random.default_rng(seed)
    tokens = rng.integers(1, VOCAB, size=(n, LENGTH))
    positive = ((tokens >= 1) & (tokens <= 5)).sum(1)
    negative = ((tokens >= 6) & (tokens <= 10)).sum(1)
    keep = positive != negative
    return tokens[keep].astype(np.int32), (positive > negative)[keep].astype(np.int32)


def loss(logits, batch):
    return optax.softmax_cross_entropy_with_integer_labels(logits, batch["y"]).mean()


def accuracy(logits, batch):
    return jnp.mean(jnp.argmax(logits, -1) == batch["y"])


def dataset() -> gdl.Dataset:
    """Train, validation and test token sets, fed to the model as int32 indices."""
    (x, y), (xv, yv), (xt, yt) = sentiment(2000, 0), sentiment(500, 1), sentiment(500, 2)
    return gdl.Dataset.from_arrays(x_train=x, y_train=y, x_val=xv, y_val=yv, x_test=xt,
                                   y_test=yt, inputs="tokens")


def main(argv=None):
    """Derives and prints the spec, then evolves with per-neuron and aligned crossover."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="a smaller run (seconds)")
    args = parser.parse_args(argv)
    data = dataset()
    size, generations, width = (4, 2, 8) if args.quick else (8, 8, 32)
    learner = gdl.Learner.from_linen(Classifier(width), loss=loss,
                                     metrics={"accuracy": accuracy})
    pop = gdl.init_population(jax.random.key(0), learner, data, size=size,
                              hparams={"learning_rate": 1e-2})
    print(gdl.permutation.describe(pop))
    results = {}
    for crossover in ("per_neuron", "aligned"):
        result = gdl.evolve_weights(jax.random.key(1), pop, data, generations=generations,
                                    epochs=2, config=gdl.WeightGAConfig(crossover=crossover),
                                    fitness="accuracy")
        test = result.best_member.evaluate(data, "test")["accuracy"]
        print(f"{crossover}: best validation accuracy {result.best_fitness:.3f}, "
              f"its test accuracy {test:.3f}")
        results[crossover] = result
    return results


if __name__ == "__main__":
    gdl.use_host_devices()
    main()
