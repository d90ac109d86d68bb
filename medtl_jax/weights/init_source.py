"""Where a run's initial weights come from: `config.model.init` -> pretrained variables (or None).

`config.model.init` is one of
  - 'scratch': random initialisation (returns None);
  - 'imagenet': the model's registered ImageNet checkpoint (`store.load_pretrained`; a local
    `config.model.weights_file` replaces the download);
  - 'mean_var': the same ImageNet variables, which the transfer code then re-samples (Raghu et al. 2019);
  - a path to a file: a `.msgpack` written by `launch.port_weights` (or any flax variables tree), or a
    source checkpoint the model's converter reads (`.pth`, Keras `.h5` / `.weights.h5` / `.keras`);
  - a weight-store name: `<store>/<name>.msgpack` (e.g. 'radimagenet_resnet50' after
    `python -m launch.port_weights --source keras:resnet50 --file RadImageNet-ResNet50_notop.h5 --out
    $MEDTL_WEIGHTS_DIR` and renaming, or any model name already ported).
"""

from __future__ import annotations

import difflib
import pathlib

from flax import serialization

from medtl_jax.weights.store import load_pretrained, weights_dir

NAMED_INITS = ("imagenet", "scratch", "mean_var")
PRETRAINED_INITS = ("imagenet", "mean_var")


def uses_pretrained(init: str) -> bool:
    """Whether `init` loads weights from somewhere (everything but 'scratch')."""
    return init != "scratch"


def _read_msgpack(path: pathlib.Path) -> dict:
    try:
        variables = serialization.msgpack_restore(path.read_bytes())
    except Exception as e:  # noqa: BLE001 - any decoding failure: name the file
        raise ValueError(f"{path}: not a readable flax msgpack weights file ({e})") from e
    if not isinstance(variables, dict) or "params" not in variables:
        raise ValueError(f"{path}: expected a variables tree with 'params', got keys "
                         f"{sorted(variables) if isinstance(variables, dict) else type(variables).__name__}")
    return variables


def store_entry(init: str, store: pathlib.Path) -> pathlib.Path:
    """The weight-store file of a store name: `<store>/<init>.msgpack`, '.msgpack' not doubled (an
    absolute or '~' path stays itself, with '.msgpack' added when it has none)."""
    name = str(pathlib.Path(init).expanduser())
    return store / (name if name.endswith(".msgpack") else f"{name}.msgpack")


def _file_hint(path: pathlib.Path) -> str:
    """' Did you mean ...?' with the closest files beside `path`, or ''."""
    siblings = [p.name for p in path.parent.iterdir() if p.is_file()] if path.parent.is_dir() else []
    close = difflib.get_close_matches(path.name, siblings, n=3, cutoff=0.6)
    return f" Did you mean {' or '.join(repr(str(path.parent / c)) for c in close)}?" if close else ""


def check_init(init: str, store_dir: str | None = None) -> None:
    """Fails early (before any JAX work) when `config.model.init` names nothing that exists: ValueError
    with close matches and how to port weights into the store. An absolute or '~' path is looked for as
    that file (or with '.msgpack' added); anything else also as a weight-store entry (`store_entry`)."""
    path = pathlib.Path(init).expanduser()
    if init in NAMED_INITS or path.is_file():
        return
    store = weights_dir(store_dir)
    entry = store_entry(init, store)
    if entry.is_file():
        return
    if path.is_absolute():
        raise ValueError(f"config.model.init: no such file {path}.{_file_hint(path)} Give an existing weights "
                         f"file, a weight-store name (store: {store}) or one of {NAMED_INITS}.")
    entries = sorted(p.stem for p in store.glob("*.msgpack")) if store.is_dir() else []
    close = difflib.get_close_matches(init.removesuffix(".msgpack"), [*NAMED_INITS, *entries], n=3, cutoff=0.6)
    hint = f" Did you mean {' or '.join(map(repr, close))}?" if close else ""
    raise ValueError(
        f"config.model.init={init!r} is not one of {NAMED_INITS}, not an existing file, and not in the "
        f"weight store (looked for {entry}).{hint} Port weights there with "
        f"`python -m launch.port_weights --source ... --out {store}`.")


def load_init_variables(init: str, model_name: str, *, weights_file: str | None = None,
                        store_dir: str | None = None) -> dict | None:
    """Pretrained variables `{'params', 'batch_stats'}` named by `config.model.init`, or None for scratch.

    Raises ValueError naming `config.model.init` (with close matches) when it is neither a known
    name, an existing file, nor an entry of the weight store.
    """
    check_init(init, store_dir)
    if init == "scratch":
        return None
    if init in PRETRAINED_INITS:
        return load_pretrained(model_name, weights_file=weights_file, store_dir=store_dir)
    path = pathlib.Path(init).expanduser()
    if path.is_file():
        if path.suffix == ".msgpack":
            return _read_msgpack(path)
        return load_pretrained(model_name, weights_file=str(path), store_dir=store_dir)
    return _read_msgpack(store_entry(init, weights_dir(store_dir)))
