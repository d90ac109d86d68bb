"""Grad-CAM (Selvaraju et al. 2017) for every classifier of the zoo, and heat-map overlays.

Public API::

    cams = gradcam(model, variables, images, class_index=None, layer=None)  # [N, H, W] in [0, 1]
    rgb = overlay(image_uint8, cams[0])                                     # uint8 [h, w, 3]
    save_overlay_png("cam.png", image_uint8, cams[0])                       # atomic PNG write

`model` is a ``Classifier`` (``medtl_jax.models.build_classifier``): its submodule 'backbone' returns an
ordered dict of NHWC feature maps. For feature map A (default: the deepest spatial one; 'pre_logits' and
'aux_logits' are not maps) and class score y (a logit: ``class_index`` indexes the logits, the single
logit of a binary model is the positive class), the channel weights are the spatial means of dy/dA,
the map is relu(sum_c w_c A_c), upsampled bilinearly to the input size and min-max normalised per image.

How dy/dA is obtained for ANY map, including ones the network keeps transforming (VGG's stage5 feeds
max-pool, fc6 and fc7 before the head; a middle ResNet stage feeds the deeper ones): the forward pass
is traced once to a jaxpr whose outputs are the logits and A, and that jaxpr is re-evaluated with a zero
tensor added to A where it is computed. The gradient with respect to that tensor is dy/dA, without
touching any model's code.
"""

from __future__ import annotations

import dataclasses
import functools
import io
from collections.abc import Callable

import jax
import jax.numpy as jnp
import matplotlib
import numpy as np
import PIL.Image
from jax.extend.core import Literal

from medtl_jax.runtime.atomic_io import write_bytes_atomic
from medtl_jax.models.segmenter import spatial_features

__all__ = ["GradCam", "gradcam", "gradcam_details", "default_layer", "cam_from_gradients", "overlay",
           "save_overlay_png"]


@dataclasses.dataclass(frozen=True)
class GradCam:
    """Grad-CAM of a batch: maps and the pieces they were made of (all numpy, float32).

    cams [N, H, W] in [0, 1] at the input size; raw [N, h, w] relu(sum_c w_c A_c) before upsampling;
    weights [N, C] (spatial means of the gradients); activations and gradients [N, h, w, C] (A and
    dy/dA); class_index [N] (the logit explained); scores [N] (its value); logits [N, K]; layer (A's key).
    """

    cams: np.ndarray
    raw: np.ndarray
    weights: np.ndarray
    activations: np.ndarray
    gradients: np.ndarray
    class_index: np.ndarray
    scores: np.ndarray
    logits: np.ndarray
    layer: str


def _backbone_features(model, variables, images) -> tuple[jax.Array, dict]:
    """(logits, the backbone's feature dict) of one eval-mode forward pass."""
    logits, state = model.apply(variables, images, train=False, mutable=["intermediates"],
                                capture_intermediates=lambda mdl, _: mdl.name == "backbone")
    try:
        features = state["intermediates"]["backbone"]["__call__"][0]
    except (KeyError, IndexError):
        raise ValueError(f"{type(model).__name__} has no submodule named 'backbone' returning feature "
                         "maps: Grad-CAM needs a medtl_jax.models.build_classifier model") from None
    return logits, features


def default_layer(model, variables, image_shape: tuple[int, ...]) -> str:
    """Key of the deepest spatial feature map of `model` for inputs of `image_shape` ([N,]H,W,C) that is at
    least 2x2 (a 1x1 map, e.g. Lite0's last stage at 32 px, has no spatial information to show)."""
    shape = tuple(image_shape) if len(image_shape) == 4 else (1, *image_shape)
    _, features = jax.eval_shape(functools.partial(_backbone_features, model),
                                 variables, jax.ShapeDtypeStruct(shape, jnp.float32))
    return _deepest_with_extent(dict(spatial_features(features)))


def _deepest_with_extent(maps: dict) -> str:
    """The deepest of the (name -> map) feature maps that is at least 2x2, else the deepest."""
    spatial = [name for name, a in maps.items() if min(a.shape[1:3]) >= 2]
    return spatial[-1] if spatial else list(maps)[-1]


def _abstract(tree):
    return jax.tree_util.tree_map(lambda a: jax.ShapeDtypeStruct(jnp.shape(a), jnp.result_type(a)), tree)


def _eval_with_offset(closed, target, offset, args: list) -> list:
    """Evaluates `closed` (a ClosedJaxpr) on flat `args`, adding `offset` to variable `target` where it
    is computed, so every later use (and the returned copy) sees A + offset."""
    jaxpr, env = closed.jaxpr, {}

    def read(v):
        return v.val if isinstance(v, Literal) else env[v]

    env.update(zip(jaxpr.constvars, closed.consts))
    env.update(zip(jaxpr.invars, args))
    for eqn in jaxpr.eqns:
        with eqn.ctx.manager:
            out = eqn.primitive.bind(*map(read, eqn.invars), **eqn.primitive.get_bind_params(eqn.params))
        outs = out if eqn.primitive.multiple_results else [out]
        for var, value in zip(eqn.outvars, outs):
            env[var] = value + offset.astype(value.dtype) if var is target else value
    return [read(v) for v in jaxpr.outvars]


def cam_from_gradients(activations: jax.Array, gradients: jax.Array, size: tuple[int, int]):
    """(weights [N,C], raw map [N,h,w], map [N,H,W] in [0,1]) from A and dy/dA ([N,h,w,C] each).

    The upsampled map is min-max normalised per image; a constant map (e.g. all zero) becomes zeros.
    """
    a, g = jnp.asarray(activations, jnp.float32), jnp.asarray(gradients, jnp.float32)
    weights = g.mean(axis=(1, 2))
    raw = jax.nn.relu(jnp.einsum("nhwc,nc->nhw", a, weights))
    up = jax.image.resize(raw, (raw.shape[0], *size), method="bilinear")
    lo, hi = up.min(axis=(1, 2), keepdims=True), up.max(axis=(1, 2), keepdims=True)
    cams = jnp.where(hi > lo, (up - lo) / jnp.where(hi > lo, hi - lo, 1.0), 0.0)
    return weights, raw, cams


@functools.partial(jax.jit, static_argnames=("model", "layer", "score_fn"))
def _gradcam_jit(model, layer: str, score_fn, variables, images, class_index):
    def forward(v, x):
        logits, features = _backbone_features(model, v, x)
        return logits, features[layer]

    closed = jax.make_jaxpr(forward)(*_abstract((variables, images)))
    target = closed.jaxpr.outvars[1]
    if not any(target is v for eqn in closed.jaxpr.eqns for v in eqn.outvars):
        raise ValueError(f"feature map {layer!r} is not computed at the top level of the traced model "
                         "(inside a jit/remat/scan): Grad-CAM cannot attach a gradient to it")
    leaves = jax.tree_util.tree_leaves((variables, images))
    shape, dtype = closed.out_avals[1].shape, closed.out_avals[1].dtype

    def explained(offset):
        logits, a = _eval_with_offset(closed, target, offset, leaves)
        logits = logits.astype(jnp.float32)
        idx = jnp.where(class_index < 0, jnp.argmax(logits, axis=-1), class_index)
        scores = (score_fn(logits) if score_fn is not None
                  else jnp.take_along_axis(logits, idx[:, None], axis=-1)[:, 0])
        return scores.sum(), (a, logits, idx, scores)  # images are independent in eval mode

    grads, (a, logits, idx, scores) = jax.grad(explained, has_aux=True)(jnp.zeros(shape, dtype))
    weights, raw, cams = cam_from_gradients(a, grads, images.shape[1:3])
    return dict(cams=cams, raw=raw, weights=weights, activations=a.astype(jnp.float32),
                gradients=grads.astype(jnp.float32), class_index=idx, scores=scores, logits=logits)


def _class_indices(class_index, n: int) -> np.ndarray:
    if class_index is None:
        return np.full((n,), -1, np.int32)
    idx = np.broadcast_to(np.asarray(class_index, np.int32), (n,))
    return np.ascontiguousarray(idx)


def gradcam_details(model, variables, images, class_index: int | np.ndarray | None = None,
                    layer: str | None = None,
                    score_fn: Callable[[jax.Array], jax.Array] | None = None) -> GradCam:
    """Grad-CAM of `images` (the model's normalised input, float [N,H,W,C]) with every intermediate.

    class_index: the logit to explain, one int or one per image; None explains each image's top logit
      (the only logit of a binary model, i.e. its positive class).
    layer: a key of the backbone's feature dict ('stage3', ...); None = `default_layer`'s choice.
    score_fn: instead of a logit, explain score_fn(logits) -> [N] (e.g. the sum of CORAL's cumulative
      logits, which grows with the predicted grade); must be hashable (a module-level function).
    """
    images = jnp.asarray(images)
    if images.ndim != 4:
        raise ValueError(f"images must be a batch [N, H, W, C], got shape {images.shape}")
    n = images.shape[0]
    _, features = jax.eval_shape(functools.partial(_backbone_features, model), variables,
                                 jax.ShapeDtypeStruct(images.shape, images.dtype))
    maps = dict(spatial_features(features))
    layer = layer or _deepest_with_extent(maps)
    if layer not in maps:
        raise ValueError(f"layer={layer!r} is not a spatial feature map of {type(model.backbone).__name__}; "
                         f"available: {', '.join(maps)}")
    idx = _class_indices(class_index, n)
    num_outputs = jax.eval_shape(lambda v, x: model.apply(v, x, train=False), variables,
                                 jax.ShapeDtypeStruct(images.shape, images.dtype)).shape[-1]
    if class_index is not None and score_fn is None and (idx.min() < 0 or idx.max() >= num_outputs):
        raise ValueError(f"class_index={class_index!r} out of range for a model with {num_outputs} logits "
                         f"(valid: 0..{num_outputs - 1}, or None for the top logit)")
    out = jax.device_get(_gradcam_jit(model, layer, score_fn, variables, images, jnp.asarray(idx)))
    return GradCam(layer=layer, **{k: np.asarray(v) for k, v in out.items()})


def gradcam(model, variables, images, class_index: int | np.ndarray | None = None,
            layer: str | None = None) -> np.ndarray:
    """Grad-CAM maps [N, H, W] in [0, 1] at the input size (see `gradcam_details` for the arguments)."""
    return gradcam_details(model, variables, images, class_index, layer).cams


def _resize_map(cam: np.ndarray, height: int, width: int) -> np.ndarray:
    if cam.shape == (height, width):
        return cam
    img = PIL.Image.fromarray(np.asarray(cam, np.float32)).resize((width, height), PIL.Image.BILINEAR)
    return np.asarray(img)


def overlay(image: np.ndarray, cam: np.ndarray, *, alpha: float = 0.4, colormap: str = "jet") -> np.ndarray:
    """uint8 RGB [H, W, 3]: the image (gray or RGB uint8, HxW or HxWxC) blended with `cam` ([h, w] in
    [0, 1], resized bilinearly to the image) drawn in `colormap`; alpha is the heat map's share."""
    image = np.asarray(image)
    if image.dtype != np.uint8:
        raise ValueError(f"overlay needs a uint8 image, got {image.dtype}")
    if image.ndim == 3 and image.shape[-1] == 1:
        image = image[..., 0]
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=-1)
    if image.ndim != 3 or image.shape[-1] != 3:
        raise ValueError(f"overlay needs an HxW, HxWx1 or HxWx3 image, got shape {image.shape}")
    cam = np.asarray(cam, np.float32)
    if cam.ndim != 2:
        raise ValueError(f"cam must be one [h, w] map, got shape {cam.shape}")
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    cam = np.clip(_resize_map(cam, *image.shape[:2]), 0.0, 1.0)
    heat = matplotlib.colormaps[colormap](cam)[..., :3] * 255.0
    blended = (1.0 - alpha) * image.astype(np.float32) + alpha * heat
    return np.clip(np.round(blended), 0, 255).astype(np.uint8)


def save_overlay_png(path, image: np.ndarray, cam: np.ndarray, *, alpha: float = 0.4,
                     colormap: str = "jet") -> None:
    """Writes `overlay(image, cam)` as a PNG at `path`, atomically (no half-written file on failure)."""
    buf = io.BytesIO()
    PIL.Image.fromarray(overlay(image, cam, alpha=alpha, colormap=colormap)).save(buf, format="PNG")
    write_bytes_atomic(path, buf.getvalue())

