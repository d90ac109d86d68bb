"""What a model is fed and how its pretrained weights are adapted to that: channels and auxiliary heads.

Gray images (X-ray, CT, MRI) go in as ONE channel when `config.model.in_channels=1`: the pipeline
normalises them with the channel-averaged constants and the RGB stem kernel is folded
(`medtl_jax.weights.channels`), which equals feeding the gray image copied to three channels, at a third
of the stem's input cost (exact away from the stem's zero-padded border; see that module).
Inception-V3 then runs without its `transform_input` (which needs 3 channels) on [-1, 1] input, where
the plain fold is exact everywhere.
"""

from __future__ import annotations

from typing import Any

from medtl_jax.models import MODELS, NORMALIZATION, ModelSpec
from medtl_jax.weights.channels import fold_input_channels, gray_normalization

SUPPORTED_CHANNELS = (1, 3)


def _stem_kernel(spec: ModelSpec | None, model_name: str) -> str:
    """``spec.stem_kernel``; ValueError naming the models that have one if ``model_name`` has none."""
    if spec is None or spec.stem_kernel is None:
        supported = ", ".join(name for name, s in MODELS.items() if s.stem_kernel is not None)
        raise ValueError(f"config.model.in_channels=1: no stem to fold for {model_name!r} "
                         f"(supported: {supported})")
    return spec.stem_kernel


def check_in_channels(model_name: str, in_channels: int, data_channels: int) -> None:
    """ValueError naming `config.model.in_channels` when the model or the data cannot take it."""
    if in_channels not in SUPPORTED_CHANNELS:
        raise ValueError(f"config.model.in_channels={in_channels} is not one of {SUPPORTED_CHANNELS}")
    if in_channels == 1 and data_channels != 1:
        raise ValueError(f"config.model.in_channels=1 needs gray images, but the dataset has "
                         f"{data_channels} channels")
    if in_channels == 1:
        _stem_kernel(MODELS.get(model_name), model_name)


def input_normalization(spec: ModelSpec, model_name: str, in_channels: int) -> tuple[tuple, tuple]:
    """Per-channel (mean, std) the pipeline applies, in [0, 1] pixel units, for `in_channels` inputs."""
    mean, std = NORMALIZATION[spec.input_norm]
    if in_channels == 3:
        return tuple(mean), tuple(std)
    if spec.has_transform_input:
        return (0.5,), (0.5,)
    m, s = gray_normalization(mean, std)
    return (m,), (s,)


def backbone_kwargs(model_name: str, in_channels: int, aux_outputs: int = 0) -> dict[str, Any]:
    """Constructor arguments beyond the defaults: Inception without transform_input for gray input,
    and with its auxiliary classifier sized to the task when `aux_outputs` > 0."""
    spec = MODELS.get(model_name)
    kwargs: dict[str, Any] = {}
    if spec is not None and spec.has_transform_input and in_channels != 3:
        kwargs["transform_input"] = False
    if aux_outputs:
        if spec is None or not spec.has_aux_classifier:
            raise ValueError(f"config.model.aux_loss_weight > 0 needs an Inception-V3 model, got {model_name!r}")
        kwargs.update(aux_logits=True, aux_num_outputs=aux_outputs)
    return kwargs


def fold_pretrained(variables: dict, spec: ModelSpec, model_name: str, in_channels: int) -> dict:
    """Pretrained RGB variables rewritten for `in_channels` inputs normalised by `input_normalization`."""
    if in_channels == 3:
        return variables
    stem_kernel = _stem_kernel(spec, model_name)
    if spec.has_transform_input or spec.input_norm == "minus_one_one":
        return fold_input_channels(variables, stem_kernel, in_channels)
    mean, std = NORMALIZATION[spec.input_norm]
    if spec.input_norm == "caffe":  # the weights see BGR: the stem kernel's channels are in that order
        mean, std = mean[::-1], std[::-1]
    return fold_input_channels(variables, stem_kernel, in_channels, input_norm=(mean, std),
                               offset_path=spec.stem_offset)
