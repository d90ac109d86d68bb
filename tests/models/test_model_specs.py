"""Every registered backbone's ``ModelSpec`` is complete and agrees with the model it builds: its stage table
covers the backbone's parameters, its stem paths exist with the right shapes, its weight layout is known.
A new family's names are picked up here by themselves. Shapes only (``jax.eval_shape``): no compute."""

import jax
import jax.numpy as jnp
import pytest

from medtl_jax.models import MODELS, WeightSource, build_classifier, stages
from medtl_jax.weights import store


def _size(name):
    return 75 if "inception" in name else 64 if name == "alexnet" else 32


def _node(tree, path: str):
    for part in path.split("/"):
        tree = tree[part]
    return tree


@pytest.mark.parametrize("name", sorted(MODELS))
def test_spec_is_complete(name):
    spec = MODELS[name]
    hash(spec)  # frozen and hashable, weight options included
    model = build_classifier(name, 2)
    x = jax.ShapeDtypeStruct((1, _size(name), _size(name), 3), jnp.float32)
    variables = jax.eval_shape(lambda x: model.init(  # the backbone's feature dict kept in 'intermediates'
        jax.random.PRNGKey(0), x, train=False, mutable=True,
        capture_intermediates=lambda mdl, _: mdl.name == "backbone"), x)
    features = variables["intermediates"]["backbone"]["__call__"][0]

    # Stage table: every top-level backbone parameter in exactly one stage, every stage used, in the order
    # of the feature dict (stage s computes the backbone's feature map s).
    top_names = set(variables["params"]["backbone"]) | set(variables.get("batch_stats", {}).get("backbone", {}))
    matches = {top: stages.matching_stages(name, top) for top in top_names}
    assert {top: m for top, m in matches.items() if len(m) != 1} == {}
    used = {m[0] for m in matches.values()}
    assert used == set(range(stages.num_stages(name))), "a stage matches no parameter"
    assert stages.stage_names(name) == list(features)

    # Stem: an HWIO kernel seeing the 3 input channels, and an offset target of its width.
    assert (spec.stem_kernel is None) == (spec.stem_offset is None)
    if spec.pretrained:
        assert spec.stem_kernel is not None, "a pretrained model needs a stem to fold gray input into"
    if spec.stem_kernel is not None:
        kernel = _node(variables["params"], spec.stem_kernel)["kernel"]
        assert kernel.ndim == 4 and kernel.shape[2] == 3
        assert _node(variables, spec.stem_offset).shape == (kernel.shape[3],)
        assert spec.stem_offset.startswith(("params/", "batch_stats/"))

    # Weights: a layout weights/ knows; a URL ending in the file name (whose '-<hex>.' is the hash checked).
    if spec.weights is not None:
        assert spec.weights.layout in store.LAYOUTS
        if spec.weights.url is not None:
            assert spec.weights.url.rpartition("/")[2] == spec.weights.filename
        else:
            assert spec.weights.package_locator, "no URL and no package: the file could never be found"
        assert store.PRETRAINED_SOURCES[name].filename == spec.weights.filename


def test_stems_and_sources_cover_exactly_the_pretrained_models():
    """Every pretrained model, and only those, has a stem to fold and a weight source; the family members
    share their stem code (7 distinct stems: resnet, lite0, B*, inception, vgg with or without BN,
    alexnet, densenet)."""
    pretrained = sorted(name for name, spec in MODELS.items() if spec.pretrained)
    assert sorted(name for name, spec in MODELS.items() if spec.stem_kernel) == pretrained
    assert sorted(name for name, spec in MODELS.items() if spec.stem_offset) == pretrained
    assert sorted(store.PRETRAINED_SOURCES) == pretrained
    assert len({(s.stem_kernel, s.stem_offset) for s in MODELS.values() if s.stem_kernel}) == 7
    assert MODELS["resnet18"].weights.converter_kwargs == {"arch": "resnet18"}


def test_unknown_weight_layout_is_refused_naming_model_and_layout():
    with pytest.raises(ValueError, match=r"model 'my_net': unknown weight layout 'torchvision_mynet'"):
        store.source_from_spec("my_net", WeightSource("my_net-0123abcd.pth", "torchvision_mynet"))
