"""Evolve your own flax model, loss and optax optimizer: python examples/custom_model.py"""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

import genetic_dl as gdl

gdl.use_host_devices()  # one CPU device per core: call it before any JAX work


class Net(nn.Module):
    """Any flax.linen module: here a small CNN with BatchNorm and dropout."""

    @nn.compact
    def __call__(self, x, train: bool):
        x = nn.Conv(16, (3, 3), use_bias=False)(x[..., None])
        x = nn.relu(nn.BatchNorm(use_running_average=not train)(x))
        x = nn.Dropout(0.1, deterministic=not train)(x.reshape((x.shape[0], -1)))
        return nn.Dense(10)(x)


def loss(logits, batch):
    labels = optax.smooth_labels(jax.nn.one_hot(batch["y"], 10), 0.1)
    return optax.softmax_cross_entropy(logits, labels).mean()


def accuracy(logits, batch):
    return jnp.mean(jnp.argmax(logits, -1) == batch["y"])


SCHEDULE = optax.warmup_cosine_decay_schedule(0.0, 1.0, 10, 500)


def optimizer(hp):  # one member's traced hyperparameters: change them, nothing recompiles
    return optax.chain(optax.clip_by_global_norm(1.0),
                       optax.adamw(lambda step: hp["peak_lr"] * SCHEDULE(step)))


def main():
    raw = gdl.load_dataset("digits")  # or your own arrays
    data = gdl.Dataset.from_arrays(x_train=raw.x_train, y_train=raw.y_train, x_val=raw.x_val,
                                   y_val=raw.y_val, x_test=raw.x_test, y_test=raw.y_test)
    learner = gdl.Learner.from_linen(Net(), loss=loss, metrics={"accuracy": accuracy},
                                     train_kwargs={"train": True}, eval_kwargs={"train": False},
                                     mutable=("batch_stats",))
    pop = gdl.init_population(jax.random.key(0), learner, data, size=8, optimizer=optimizer,
                              hparams={"peak_lr": np.geomspace(1e-3, 3e-2, 8)})
    config = gdl.WeightGAConfig(rule="pbt", pbt_bounds=(("peak_lr", (1e-4, 1e-1)),))
    result = gdl.evolve_weights(jax.random.key(1), pop, data, generations=4, epochs=2,
                                config=config, fitness="accuracy")
    print(f"best validation accuracy {result.best_fitness:.3f} (member {result.best_id})")
    print("test metrics of the final population:",
          {k: np.round(np.asarray(v), 3).tolist() for k, v in
           gdl.evaluate(result.population, data, "test").items()})


if __name__ == "__main__":
    main()
