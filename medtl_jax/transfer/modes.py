"""Transfer-learning modes: what trains, how fast each depth learns, and how the weights start.

Training side, from ``config.transfer`` (depth stages are ``medtl_jax.models.stages``'s):
  mode='finetune'       every parameter trains.
  mode='linear_probe'   the whole backbone is frozen and runs in inference mode (BatchNorm running
                        statistics used, never updated): only the head (or a decoder) learns.
  mode='freeze_stages'  stages 0 .. freeze_stages-1 (stem first) are frozen, deeper ones train.
  layer_decay           layer-wise learning-rate decay (LLRD); 1.0 = off. Backbone stage ``s`` of ``n``
                        learns at ``layer_decay ** (n - s)`` times the rate of the head (stage ``n``).
  bn                    'train' | 'frozen': whether the backbone's BatchNorm layers normalise with batch
                        statistics and update their running ones ('train') or use the running ones
                        ('frozen', the whole backbone; its BN scales and biases may still train).
                        ``effective_bn_mode`` forces 'frozen' for a linear probe.

Frozen means bit-identical: frozen parameters get ``optax.set_to_zero()`` updates, so neither weight
decay nor momentum moves them, and the wrapped optimizer keeps no state for them. Their BatchNorm
running statistics, however, are not parameters: with ``mode='freeze_stages'`` and ``bn='train'`` the
frozen stages still normalise with batch statistics and their running averages drift towards the new
data. Use ``bn='frozen'`` for truly frozen stages (then all backbone BN layers use running statistics).

Init side, from ``config.model.init`` ('imagenet' | 'scratch' | 'mean_var') and
``config.transfer.transfusion_stages`` (Raghu et al. 2019, "Transfusion: Understanding Transfer
Learning for Medical Imaging"): ``mean_var_init`` keeps only each pretrained tensor's mean and variance;
``partial_transfusion`` keeps the pretrained weights of the first k stages and re-initialises the rest.
``initialize`` applies whichever the config asks for.
"""

from __future__ import annotations

from typing import Any

import jax
import numpy as np
import optax
from flax import traverse_util
from flax.core import unfreeze

from medtl_jax.models.layers.heads import BN_MODES
from medtl_jax.models.stages import num_stages, stage_of
from medtl_jax.weights.store import WeightMismatchError, merge_pretrained

MODES = ("finetune", "linear_probe", "freeze_stages")
INITS = ("imagenet", "scratch", "mean_var")
FROZEN = "frozen"


def init_kind(init: str) -> str:
    """'scratch' and 'mean_var' as they are; any other source of weights (ImageNet, a store name, a file)
    is transferred like 'imagenet'."""
    return init if init in ("scratch", "mean_var") else "imagenet"


def validate_transfer(transfer_cfg: Any, model_name: str, init: str = "imagenet") -> None:
    """Raises ValueError naming the field when ``config.transfer`` (with ``config.model.init``) asks for
    something impossible or silently ineffective, before any model is built."""
    t, n = transfer_cfg, num_stages(model_name)
    if t.mode not in MODES:
        raise ValueError(f"config.transfer.mode={t.mode!r} is not one of {MODES}")
    if t.bn not in BN_MODES:
        raise ValueError(f"config.transfer.bn={t.bn!r} is not one of {BN_MODES}")
    if t.mode == "freeze_stages" and not 1 <= t.freeze_stages <= n:
        raise ValueError(f"config.transfer.freeze_stages={t.freeze_stages} must be in 1..{n} for "
                         f"{model_name!r} ({n} stages) with mode='freeze_stages'")
    if t.mode != "freeze_stages" and t.freeze_stages:
        raise ValueError(f"config.transfer.freeze_stages={t.freeze_stages} needs "
                         f"config.transfer.mode='freeze_stages' (mode is {t.mode!r})")
    if not t.layer_decay > 0:
        raise ValueError(f"config.transfer.layer_decay={t.layer_decay} must be > 0 (1.0 = off)")
    if t.mode == "linear_probe" and t.layer_decay != 1.0:
        raise ValueError("config.transfer.layer_decay has no effect with mode='linear_probe' (the whole "
                         "backbone is frozen); leave it at 1.0")
    if init not in INITS:
        raise ValueError(f"config.model.init={init!r} is not one of {INITS}")
    if not 0 <= t.transfusion_stages <= n:
        raise ValueError(f"config.transfer.transfusion_stages={t.transfusion_stages} must be in 0..{n} "
                         f"for {model_name!r}")
    if t.transfusion_stages and init != "imagenet":
        raise ValueError(f"config.transfer.transfusion_stages={t.transfusion_stages} needs "
                         f"config.model.init='imagenet' (got {init!r})")


def effective_bn_mode(transfer_cfg: Any) -> str:
    """The backbone BatchNorm mode to build the model with: 'frozen' for a linear probe (a probe on
    features that drift with the batch statistics would not be a probe), else ``transfer_cfg.bn``."""
    return "frozen" if transfer_cfg.mode == "linear_probe" else transfer_cfg.bn


def with_bn_mode(model: Any, transfer_cfg: Any) -> Any:
    """``model`` (a ``Classifier`` or any module with a ``backbone_bn`` field) set to
    ``effective_bn_mode``, so model and optimizer agree on what is frozen."""
    if not hasattr(model, "backbone_bn"):
        raise TypeError(f"{type(model).__name__} has no backbone_bn field to set the BatchNorm mode on")
    return model.clone(backbone_bn=effective_bn_mode(transfer_cfg))


def frozen_stage_count(model_name: str, transfer_cfg: Any) -> int:
    """How many leading backbone stages are frozen: all of them for a linear probe, ``freeze_stages``
    for mode 'freeze_stages', none for a fine-tune."""
    if transfer_cfg.mode == "linear_probe":
        return num_stages(model_name)
    return transfer_cfg.freeze_stages if transfer_cfg.mode == "freeze_stages" else 0


def stage_lr_multiplier(model_name: str, stage: int, layer_decay: float) -> float:
    """LLRD learning-rate multiplier of ``stage``: ``layer_decay ** (num_stages - stage)`` (1.0 for
    the head and decoder, which sit at ``num_stages``)."""
    return float(layer_decay) ** (num_stages(model_name) - stage)


def param_labels(params: Any, model_name: str, transfer_cfg: Any) -> Any:
    """A pytree like ``params`` of string labels: 'frozen' for frozen parameters, else
    'train_s<stage>' (stage from ``stage_of``; head/decoder parameters get 'train_s<num_stages>')."""
    validate_transfer(transfer_cfg, model_name)
    frozen_below = frozen_stage_count(model_name, transfer_cfg)

    def label(path, _):
        stage = stage_of(model_name, path)
        return FROZEN if stage < frozen_below else f"train_s{stage}"

    return jax.tree_util.tree_map_with_path(label, params)


def wrap_optimizer(tx: optax.GradientTransformation, params: Any, model_name: str,
                   transfer_cfg: Any) -> optax.GradientTransformation:
    """``tx`` restricted to the trainable parameters, with LLRD: frozen parameters get
    ``optax.set_to_zero()`` and no optimizer state; the others go through ``tx`` as one group, so
    global-norm clipping inside ``tx`` sees only trainable gradients.

    LLRD multiplies ``tx``'s final update of a stage-``s`` parameter by ``stage_lr_multiplier``. For
    AdamW that final update is ``-lr * (adam_direction + wd * p)``, so the stage's learning rate and
    its decoupled weight decay are scaled together -- the same as giving the stage its own learning
    rate, which is how LLRD is usually defined. ``params`` may be abstract (only its structure is read).
    """
    labels = param_labels(params, model_name, transfer_cfg)
    if transfer_cfg.layer_decay == 1.0 and FROZEN not in jax.tree_util.tree_leaves(labels):
        return tx  # plain fine-tuning: nothing to partition
    trainable = jax.tree_util.tree_map(lambda lab: FROZEN if lab == FROZEN else "train", labels)
    train_tx = tx
    if transfer_cfg.layer_decay != 1.0:
        scales = {f"train_s{s}": optax.scale(stage_lr_multiplier(model_name, s, transfer_cfg.layer_decay))
                  for s in range(num_stages(model_name) + 1)}
        scales[FROZEN] = optax.set_to_zero()  # never reached: the outer partition masks frozen leaves
        train_tx = optax.chain(tx, optax.multi_transform(scales, labels))
    return optax.multi_transform({FROZEN: optax.set_to_zero(), "train": train_tx}, trainable)


# ----------------------------------------------------------------------------------------------------
# Initialisation: Transfusion's Mean Var init and partial transfusion.
# ----------------------------------------------------------------------------------------------------

def _resample(gen: np.random.Generator, w: Any) -> np.ndarray:
    """i.i.d. N(mean(w), var(w)) samples shaped like ``w``; tensors of size <= 1 are returned as they are."""
    w = np.asarray(w)
    if w.size <= 1:
        return w
    mean, std = np.mean(w, dtype=np.float64), np.std(w, dtype=np.float64)
    return (mean + std * gen.standard_normal(w.shape, np.float32)).astype(w.dtype)


def _fresh_stat(path, value) -> np.ndarray:
    name = str(getattr(path[-1], "key", path[-1]))
    if name not in ("mean", "var"):
        raise ValueError(f"unexpected batch statistic {jax.tree_util.keystr(path)}: expected 'mean'/'var'")
    return (np.zeros if name == "mean" else np.ones)(np.shape(value), np.asarray(value).dtype)


def mean_var_init(pretrained_variables: dict, rng: jax.Array) -> dict:
    """Transfusion's "Mean Var" init: each pretrained parameter tensor replaced by i.i.d. samples from
    N(mean, variance) of that tensor, keeping the pretrained scale per layer but none of its features.

    Size-1 tensors are kept. BatchNorm running statistics are reset to fresh values (mean 0, var 1, as
    a new model's): the pretrained ones describe activations of weights that no longer exist, so they
    are re-estimated in training (use ``bn='train'``). Other collections pass through unchanged.
    Returns host numpy arrays of the pretrained dtypes; the same ``rng`` gives the same samples.
    """
    variables = dict(unfreeze(pretrained_variables))
    # Sampled on the host with numpy seeded from ``rng``: deterministic, and no XLA compile per shape.
    gen = np.random.default_rng(np.asarray(jax.random.key_data(rng)).ravel().tolist())
    variables["params"] = jax.tree_util.tree_map(lambda w: _resample(gen, w), variables["params"])
    if "batch_stats" in variables:
        variables["batch_stats"] = jax.tree_util.tree_map_with_path(_fresh_stat, variables["batch_stats"])
    return variables


def partial_transfusion(init_variables: dict, pretrained_variables: dict, model_name: str, k: int) -> dict:
    """``init_variables`` with the backbone's first ``k`` stages (params and batch_stats) taken from
    ``pretrained_variables`` and everything deeper (later stages, head, decoder) left as initialised:
    Transfusion's "transfer only the lowest layers". ``k=0`` returns the init, ``k=num_stages`` the
    whole pretrained backbone. ``pretrained_variables`` may hold more (e.g. a 1000-way ImageNet head);
    WeightMismatchError if a leaf to copy is missing or shaped differently.
    """
    n = num_stages(model_name)
    if not 0 <= k <= n:
        raise ValueError(f"transfusion stages k={k} must be in 0..{n} for {model_name!r}")
    init_flat = traverse_util.flatten_dict(unfreeze(init_variables))
    pre_flat = traverse_util.flatten_dict(unfreeze(pretrained_variables))
    merged, problems = {}, []
    for key, value in init_flat.items():
        merged[key] = value
        if stage_of(model_name, key[1:]) >= k:
            continue
        name = "/".join(key)
        if key not in pre_flat:
            problems.append(f"missing in the pretrained variables: {name}")
        elif np.shape(pre_flat[key]) != np.shape(value):
            problems.append(f"{name}: expected {np.shape(value)} got {np.shape(pre_flat[key])}")
        else:
            merged[key] = np.asarray(pre_flat[key], dtype=np.asarray(value).dtype)
    if problems:
        raise WeightMismatchError(f"partial transfusion of {k} stages of {model_name!r} failed:\n  "
                                  + "\n  ".join(problems))
    return traverse_util.unflatten_dict(merged)


def initialize(init_variables: dict, model_name: str, init: str, *, pretrained: dict | None = None,
               transfusion_stages: int = 0, rng: jax.Array | None = None,
               skip: tuple[str, ...] = ("head",)) -> dict:
    """The starting variables for ``config.model.init``: 'scratch' -> ``init_variables``; 'imagenet' ->
    ``pretrained`` merged in (``skip`` paths stay fresh), only its first ``transfusion_stages``
    stages if that is > 0; 'mean_var' -> ``mean_var_init(pretrained, rng)`` merged in the same way."""
    if init == "scratch":
        if transfusion_stages:
            raise ValueError("transfusion_stages needs init='imagenet'")
        return init_variables
    if init not in INITS:
        raise ValueError(f"config.model.init={init!r} is not one of {INITS}")
    if pretrained is None:
        raise ValueError(f"init={init!r} needs the pretrained variables")
    if init == "mean_var":
        if rng is None:
            raise ValueError("init='mean_var' needs an rng to sample with")
        if transfusion_stages:
            raise ValueError("transfusion_stages needs init='imagenet'")
        return merge_pretrained(init_variables, mean_var_init(pretrained, rng), skip=skip)
    merged = merge_pretrained(init_variables, pretrained, skip=skip)
    if transfusion_stages:
        return partial_transfusion(init_variables, merged, model_name, transfusion_stages)
    return merged
