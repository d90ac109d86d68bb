"""The trainer tests' tiny recipe and the first batches of its epoch 0.

Import-light (nothing here starts JAX): tests/helpers/multiprocess_worker.py imports it before it sets up
its devices.
"""

import itertools


def tiny_config(data_dir: str, **overrides):
    """The trainer tests' tiny recipe: synthetic 'tiny' data, ResNet-18 CIFAR stem at 32 px, SGD."""
    from configs.base import base_config
    c = base_config()
    c.data.name, c.data.subset, c.data.data_dir, c.data.input_size = "synthetic", "tiny", data_dir, 32
    c.model.name, c.model.init, c.model.stem = "resnet18", "scratch", "cifar"
    c.optimizer.name, c.optimizer.lr, c.optimizer.weight_decay = "sgd", 0.05, 0.0
    c.schedule.name, c.schedule.warmup_epochs = "constant", 0.0
    c.train.epochs, c.train.batch_size, c.train.eval_batch_size, c.train.log_every_steps = 2, 16, 32, 4
    c.eval.bootstrap_samples = 50
    for key, value in overrides.items():
        group, name = key.split(".")
        c[group][name] = value
    return c


def first_batches(config, s, n):
    """The first `n` training batches of epoch 0 of the set-up `s` (from the trainer's make_setup)."""
    return list(itertools.islice(s.parts.train_epoch(0, 0), n))
