"""Model registry: backbone name -> its ``ModelSpec`` (how to build it, what input it expects, its depth
stages, its stem, its ImageNet weights).

A backbone's facts live in one place, its family file. To add a family:
  1. write ``models/<family>.py``: the module (returning a dict of feature maps), its depth-stage table
     (the rule is in ``models/stages.py``) and ``SPECS``, one ``ModelSpec`` per registered name (``spec.py``;
     ``weights=WeightSource(...)`` names the checkpoint file, its URL and its ``layout``);
  2. add one line ``**<family>.SPECS`` to ``MODELS`` below;
  3. if it has ImageNet weights: its name map / converter in ``weights/`` and one ``LAYOUTS`` entry in
     ``weights/store.py`` under the spec's layout key;
  4. tests/models/test_model_specs.py checks every registered spec (stages cover the parameters, stem paths and
     layout exist) and picks the new names up by itself.
``build_classifier`` then puts the standard head on it.
"""

from __future__ import annotations

import difflib
from typing import Any

import jax.numpy as jnp

from medtl_jax.models import alexnet, cbr, densenet, efficientnet, efficientnet_lite, inception, resnet, vgg
from medtl_jax.models.layers.heads import Classifier
from medtl_jax.models.spec import NORMALIZATION, ModelSpec, WeightSource

__all__ = ["MODELS", "NORMALIZATION", "ModelSpec", "WeightSource", "build_classifier", "get_spec"]

MODELS: dict[str, ModelSpec] = {
    **resnet.SPECS,
    **efficientnet_lite.SPECS,
    **efficientnet.SPECS,
    **inception.SPECS,
    **vgg.SPECS,
    **alexnet.SPECS,
    **densenet.SPECS,
    **cbr.SPECS,
}


def get_spec(name: str) -> ModelSpec:
    """The ``ModelSpec`` registered as ``name``; ValueError with close matches if there is none."""
    try:
        return MODELS[name]
    except KeyError:
        close = difflib.get_close_matches(name, MODELS, n=3, cutoff=0.5)
        hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        raise ValueError(f"unknown model {name!r}.{hint} Known models: {', '.join(MODELS)}.") from None


def build_classifier(name: str, num_outputs: int, *, stem: str = "imagenet",
                     dtype: Any = jnp.float32, **backbone_kwargs) -> Classifier:
    """``Classifier`` (registered backbone + pooled dense head with the spec's dropout) for ``name``.

    ``stem='cifar'`` swaps a ResNet's stride-4 ImageNet stem for the stride-1 3x3 stem used on 28x28
    MedMNIST images (the ported stem weights then no longer fit). ``dtype`` is the compute dtype.
    ``backbone_kwargs`` go to the backbone's constructor (e.g. Inception's ``aux_logits``).
    """
    spec = get_spec(name)
    if stem not in spec.stems:
        raise ValueError(f"model {name!r} has no stem {stem!r}; available: {', '.join(spec.stems)}")
    kwargs: dict[str, Any] = {"dtype": dtype, **backbone_kwargs}
    if stem != spec.stems[0]:
        kwargs["stem"] = stem
    return Classifier(spec.build_backbone(**kwargs), num_outputs, dropout_rate=spec.dropout_rate,
                      dtype=dtype)
