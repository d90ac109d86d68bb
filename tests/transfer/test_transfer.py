"""Transfer modes: stage tables, frozen-means-frozen training, LLRD, Mean Var init, partial transfusion."""

import functools

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest
from flax import traverse_util

from configs.base import base_config
from medtl_jax.transfer import modes as transfer
from medtl_jax.models import build_classifier
from medtl_jax.models import stages
from medtl_jax.transfer.optimizer import make_optimizer


def transfer_cfg(mode="finetune", freeze_stages=0, layer_decay=1.0, bn="train", transfusion_stages=0):
    return ml_collections.ConfigDict(dict(mode=mode, freeze_stages=freeze_stages, layer_decay=layer_decay,
                                          bn=bn, transfusion_stages=transfusion_stages))


def _size(name):
    return 75 if "inception" in name else 64 if name == "alexnet" else 32


@functools.lru_cache(maxsize=None)
def _init(name, seed=0):
    """Real (tiny-input) variables of ``build_classifier(name, 2)``, on the host."""
    model = build_classifier(name, 2)
    x = jnp.zeros((1, _size(name), _size(name), 3))
    variables = jax.jit(lambda r: model.init({"params": r, "dropout": r}, x, train=False))(
        jax.random.PRNGKey(seed))
    return jax.device_get(variables)


def _flat(tree):
    return traverse_util.flatten_dict(dict(tree))


# ----------------------------------------------------------------------------------------------------
# Stage tables.
# ----------------------------------------------------------------------------------------------------

# Every model's table covering its parameters is checked in tests/models/test_model_specs.py.


def test_inception_aux_classifier_is_in_stage2():
    assert stages.stage_of("inception_v3", "backbone/AuxLogits/fc/kernel") == 2
    assert stages.stage_names("inception_v3")[2] == "stage2"


def test_stage_of_paths_and_head():
    assert stages.num_stages("resnet18") == 5
    assert stages.stage_of("resnet18", "backbone/conv1/kernel") == 0
    assert stages.stage_of("resnet18", ("backbone", "layer3_1", "bn2", "scale")) == 3
    assert stages.stage_of("resnet18", "head/kernel") == 5
    assert stages.stage_of("resnet18", "decoder_up1/conv/kernel") == 5
    assert stages.stage_of("densenet121", "backbone/transition1/conv/kernel") == 2
    assert stages.stage_of("efficientnet_lite0", "backbone/blocks_10/bn0/scale") == 3
    assert stages.stage_of("efficientnet_lite0", "backbone/blocks_11/bn0/scale") == 4
    assert stages.stage_of("vgg16", "backbone/fc7/kernel") == 5
    with pytest.raises(ValueError, match="matches 0 stages"):
        stages.stage_of("resnet18", "backbone/layer5_0/conv1/kernel")
    with pytest.raises(ValueError, match="no stage table"):
        stages.num_stages("resnet19")


# ----------------------------------------------------------------------------------------------------
# Labels and validation.
# ----------------------------------------------------------------------------------------------------

def test_param_labels_per_mode():
    params = _init("resnet18")["params"]
    flat = {"/".join(k): v for k, v in _flat(transfer.param_labels(params, "resnet18", transfer_cfg())).items()}
    assert flat["backbone/conv1/kernel"] == "train_s0" and flat["head/kernel"] == "train_s5"
    probe = _flat(transfer.param_labels(params, "resnet18", transfer_cfg("linear_probe")))
    assert {k: v for k, v in probe.items() if v != "frozen"} == {("head", "kernel"): "train_s5",
                                                                 ("head", "bias"): "train_s5"}
    frozen2 = {"/".join(k): v for k, v in _flat(transfer.param_labels(
        params, "resnet18", transfer_cfg("freeze_stages", 2))).items()}
    assert frozen2["backbone/bn1/scale"] == "frozen"
    assert frozen2["backbone/layer1_1/conv2/kernel"] == "frozen"
    assert frozen2["backbone/layer2_0/conv1/kernel"] == "train_s2"


@pytest.mark.parametrize("overrides, message", [
    (dict(mode="probe"), "mode"),
    (dict(bn="eval"), "bn"),
    (dict(mode="freeze_stages", freeze_stages=0), "freeze_stages"),
    (dict(mode="freeze_stages", freeze_stages=6), "freeze_stages"),
    (dict(mode="finetune", freeze_stages=2), "needs config.transfer.mode='freeze_stages'"),
    (dict(layer_decay=0.0), "layer_decay"),
    (dict(mode="linear_probe", layer_decay=0.5), "no effect"),
    (dict(transfusion_stages=6), "transfusion_stages"),
])
def test_validate_rejects(overrides, message):
    with pytest.raises(ValueError, match=message):
        transfer.validate_transfer(transfer_cfg(**overrides), "resnet18")


def test_validate_transfusion_needs_imagenet_and_bn_mode():
    transfer.validate_transfer(transfer_cfg(transfusion_stages=2), "resnet18", "imagenet")
    with pytest.raises(ValueError, match="needs config.model.init='imagenet'"):
        transfer.validate_transfer(transfer_cfg(transfusion_stages=2), "resnet18", "scratch")
    assert transfer.effective_bn_mode(transfer_cfg("linear_probe", bn="train")) == "frozen"
    assert transfer.effective_bn_mode(transfer_cfg("freeze_stages", 2, bn="train")) == "train"
    model = transfer.with_bn_mode(build_classifier("cbr_tiny", 2), transfer_cfg("linear_probe"))
    assert model.backbone_bn == "frozen"


# ----------------------------------------------------------------------------------------------------
# Frozen means frozen: real train steps with AdamW (weight decay > 0, clipping on).
# ----------------------------------------------------------------------------------------------------

def _train(name, cfg, steps=3):
    """``steps`` real train steps (CE loss, mutable batch_stats) with the project's AdamW, wrapped."""
    c = base_config()
    c.optimizer.name, c.optimizer.lr, c.optimizer.weight_decay, c.optimizer.grad_clip_norm = \
        "adamw", 1e-2, 0.1, 1.0
    c.schedule.name, c.schedule.warmup_epochs = "constant", 0.0
    tx, _ = make_optimizer(c, steps_per_epoch=1, total_steps=steps)
    model = transfer.with_bn_mode(build_classifier(name, 2), cfg)
    variables = _init(name)
    tx = transfer.wrap_optimizer(tx, variables["params"], name, cfg)

    @jax.jit
    def step(params, batch_stats, opt_state, x, y):
        def loss_fn(p):
            logits, updates = model.apply({"params": p, "batch_stats": batch_stats}, x, train=True,
                                          mutable=["batch_stats"], rngs={"dropout": jax.random.PRNGKey(0)})
            return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean(), updates["batch_stats"]

        (_, new_stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), new_stats, opt_state

    params, stats = variables["params"], variables["batch_stats"]
    opt_state = tx.init(params)
    rng = np.random.default_rng(0)
    for _ in range(steps):
        x = jnp.asarray(rng.normal(size=(8, 32, 32, 3)), jnp.float32)
        y = jnp.asarray(rng.integers(0, 2, size=8))
        params, stats, opt_state = step(params, stats, opt_state, x, y)
    return variables, jax.device_get(params), jax.device_get(stats)


def _split_by_stage(name, tree, k):
    """Flat leaves of ``tree`` -> (stage < k, stage >= k)."""
    below, above = {}, {}
    for path, leaf in _flat(tree).items():
        (below if stages.stage_of(name, path) < k else above)[path] = leaf
    return below, above


@pytest.mark.parametrize("name, cfg, k", [
    ("cbr_tiny", transfer_cfg("linear_probe", bn="train"), 4),  # bn='train' overridden to 'frozen'
    ("resnet18", transfer_cfg("freeze_stages", 2, bn="frozen"), 2),
])
def test_frozen_means_frozen(name, cfg, k):
    init, params, stats = _train(name, cfg)
    frozen_p, train_p = _split_by_stage(name, params, k)
    init_frozen_p, init_train_p = _split_by_stage(name, init["params"], k)
    assert frozen_p and train_p
    assert [p for p in frozen_p if not np.array_equal(frozen_p[p], init_frozen_p[p])] == []
    assert [p for p in train_p if np.array_equal(train_p[p], init_train_p[p])] == []
    # bn 'frozen' (explicit, or implied by the linear probe): no running statistic moved at all.
    assert [p for p, v in _flat(stats).items() if not np.array_equal(v, _flat(init["batch_stats"])[p])] == []


def test_freeze_stages_with_bn_train_still_updates_running_stats():
    """The documented caveat: frozen parameters stay, but their BN running averages follow the data."""
    init, params, stats = _train("cbr_tiny", transfer_cfg("freeze_stages", 2, bn="train"), steps=1)
    frozen_p, _ = _split_by_stage("cbr_tiny", params, 2)
    assert all(np.array_equal(v, _flat(init["params"])[p]) for p, v in frozen_p.items())
    frozen_s, _ = _split_by_stage("cbr_tiny", stats, 2)
    assert not np.array_equal(frozen_s[("backbone", "bn1", "mean")], init["batch_stats"]["backbone"]["bn1"]["mean"])


# ----------------------------------------------------------------------------------------------------
# LLRD and the optimizer wrapper's arithmetic.
# ----------------------------------------------------------------------------------------------------

def _random_like(tree, seed):
    gen = np.random.default_rng(seed)
    return jax.tree_util.tree_map(lambda x: gen.standard_normal(np.shape(x), np.float32), tree)


@pytest.mark.parametrize("mode, k", [("finetune", 0), ("freeze_stages", 3)])
def test_llrd_sgd_update_is_lr_times_decay_power_times_grad(mode, k):
    params = _init("resnet18")["params"]
    grads = _random_like(params, 1)
    lr, decay, n = 0.1, 0.5, stages.num_stages("resnet18")
    tx = transfer.wrap_optimizer(optax.sgd(lr), params, "resnet18", transfer_cfg(mode, k, layer_decay=decay))
    updates, _ = jax.jit(tx.update)(grads, tx.init(params), params)
    flat_g = _flat(grads)
    for path, u in _flat(updates).items():
        s = stages.stage_of("resnet18", path)
        expected = np.zeros_like(u) if s < k else -lr * decay ** (n - s) * np.asarray(flat_g[path])
        np.testing.assert_allclose(u, expected, rtol=1e-6, err_msg="/".join(path))


def test_llrd_scales_adamw_update_including_weight_decay():
    params = _init("cbr_tiny")["params"]
    grads = _random_like(params, 2)
    adamw = optax.adamw(1e-3, weight_decay=0.5)
    plain = transfer.wrap_optimizer(adamw, params, "cbr_tiny", transfer_cfg())
    llrd = transfer.wrap_optimizer(adamw, params, "cbr_tiny", transfer_cfg(layer_decay=0.7))
    u_plain, _ = jax.jit(plain.update)(grads, plain.init(params), params)
    u_llrd, _ = jax.jit(llrd.update)(grads, llrd.init(params), params)
    flat_plain = _flat(u_plain)
    for path, u in _flat(u_llrd).items():
        mult = 0.7 ** (4 - stages.stage_of("cbr_tiny", path))
        np.testing.assert_allclose(u, mult * np.asarray(flat_plain[path]), rtol=1e-5)
    assert transfer.stage_lr_multiplier("cbr_tiny", 4, 0.7) == 1.0


def test_gradient_clipping_sees_only_trainable_gradients():
    params = _init("cbr_tiny")["params"]
    grads = jax.tree_util.tree_map(lambda g: 100.0 * g, _random_like(params, 3))
    tx = optax.chain(optax.clip_by_global_norm(1.0), optax.sgd(1.0))
    wrapped = transfer.wrap_optimizer(tx, params, "cbr_tiny", transfer_cfg("linear_probe"))
    updates, state = wrapped.update(grads, wrapped.init(params), params)
    head_only, _ = tx.update({"head": grads["head"]}, tx.init({"head": params["head"]}))
    np.testing.assert_allclose(updates["head"]["kernel"], head_only["head"]["kernel"], rtol=1e-6)
    assert optax.global_norm(updates["head"]) == pytest.approx(1.0, rel=1e-5)
    assert optax.global_norm(updates["backbone"]) == 0.0
    # fine-tuning with LLRD: one global clip over all stages, then the per-stage multipliers
    llrd = transfer.wrap_optimizer(tx, params, "cbr_tiny", transfer_cfg(layer_decay=0.5))
    llrd_updates, _ = llrd.update(grads, llrd.init(params), params)
    norm = float(optax.global_norm(grads))
    flat_g = _flat(grads)
    for path, u in _flat(llrd_updates).items():
        mult = 0.5 ** (4 - stages.stage_of("cbr_tiny", path))
        np.testing.assert_allclose(u, -mult * flat_g[path] / norm, rtol=1e-5, atol=1e-9)
    # no optimizer state is kept for the frozen backbone
    state_size = sum(np.size(x) for x in jax.tree_util.tree_leaves(state))
    assert state_size < 2 * sum(np.size(x) for x in jax.tree_util.tree_leaves(params["head"])) + 10


# ----------------------------------------------------------------------------------------------------
# Initialisation: Mean Var and partial transfusion.
# ----------------------------------------------------------------------------------------------------

@functools.lru_cache(maxsize=None)
def _pretrained(name):
    """Stand-in ImageNet variables: the init perturbed (random per-tensor scale and shift, so BN scales
    vary too), shifted running statistics and a 1000-way head."""
    gen = np.random.default_rng(7)
    perturb = lambda w: (w * gen.uniform(0.5, 2.0) + gen.normal(0.0, 0.1, np.shape(w))).astype(w.dtype)
    variables = _init(name)
    params = jax.tree_util.tree_map(perturb, variables["params"])
    width = params["head"]["kernel"].shape[0]
    params["head"] = {"kernel": gen.normal(0.0, 0.05, (width, 1000)).astype(np.float32),
                      "bias": np.zeros(1000, np.float32)}
    stats = jax.tree_util.tree_map(lambda s: s + np.float32(0.25), variables["batch_stats"])
    return {"params": params, "batch_stats": stats}


def test_mean_var_init_keeps_moments_not_values():
    pretrained = _pretrained("resnet18")
    out = transfer.mean_var_init(pretrained, jax.random.PRNGKey(0))
    flat_in, flat_out = _flat(pretrained["params"]), _flat(out["params"])
    assert flat_in.keys() == flat_out.keys()
    for path, w in flat_in.items():
        w, v = np.asarray(w), np.asarray(flat_out[path])
        assert v.shape == w.shape and v.dtype == w.dtype
        if np.std(w) == 0:  # e.g. a fresh BN scale: N(1, 0) gives it back
            np.testing.assert_array_equal(v, w)
            continue
        assert not np.allclose(v, w), path
        se = np.std(w) / np.sqrt(w.size)
        assert abs(v.mean() - w.mean()) < 5 * se + 1e-7, path
        assert abs(v.std() / w.std() - 1) < 5 * np.sqrt(2 / w.size) + 1e-6, path
    for path, s in _flat(out["batch_stats"]).items():
        np.testing.assert_array_equal(s, np.zeros_like(s) if path[-1] == "mean" else np.ones_like(s))


def test_mean_var_init_samples_a_non_constant_tensor_from_its_moments():
    w = np.linspace(-3.0, 5.0, 4096, dtype=np.float32).reshape(64, 64)
    out = transfer.mean_var_init({"params": {"w": w, "b": np.float32([2.5])}}, jax.random.PRNGKey(1))
    assert abs(out["params"]["w"].mean() - w.mean()) < 5 * w.std() / 64
    assert abs(out["params"]["w"].std() / w.std() - 1) < 0.05
    assert out["params"]["b"].tolist() == [2.5]


@pytest.mark.parametrize("k", [0, 2, 5])
def test_partial_transfusion_takes_only_the_first_k_stages(k):
    init = _init("resnet18")
    pretrained = _pretrained("resnet18")
    merged = transfer.partial_transfusion(init, pretrained, "resnet18", k)
    flat_init, flat_pre = _flat(init), _flat(pretrained)
    for key, value in _flat(merged).items():
        source = flat_pre if stages.stage_of("resnet18", key[1:]) < k else flat_init
        assert np.array_equal(value, source[key]), "/".join(key)
    # the two sources really differ, in params and batch_stats alike
    assert not np.array_equal(flat_init[("params", "backbone", "conv1", "kernel")],
                              flat_pre[("params", "backbone", "conv1", "kernel")])
    assert not np.array_equal(flat_init[("batch_stats", "backbone", "bn1", "mean")],
                              flat_pre[("batch_stats", "backbone", "bn1", "mean")])


def test_initialize_modes():
    init, pretrained = _init("resnet18"), _pretrained("resnet18")
    conv1 = ("params", "backbone", "conv1", "kernel")
    deep = ("params", "backbone", "layer4_1", "conv2", "kernel")
    full = _flat(transfer.initialize(init, "resnet18", "imagenet", pretrained=pretrained))
    assert np.array_equal(full[deep], _flat(pretrained)[deep])
    assert np.array_equal(full[("params", "head", "kernel")], init["params"]["head"]["kernel"])
    part = _flat(transfer.initialize(init, "resnet18", "imagenet", pretrained=pretrained, transfusion_stages=1))
    assert np.array_equal(part[conv1], _flat(pretrained)[conv1])
    assert np.array_equal(part[deep], _flat(init)[deep])
    mv = _flat(transfer.initialize(init, "resnet18", "mean_var", pretrained=pretrained,
                                   rng=jax.random.PRNGKey(3)))
    assert mv[deep].shape == part[deep].shape and not np.array_equal(mv[deep], _flat(pretrained)[deep])
    assert transfer.initialize(init, "resnet18", "scratch") is init
    with pytest.raises(ValueError, match="pretrained"):
        transfer.initialize(init, "resnet18", "imagenet")
