"""Per-example attributes ('site', ...) of a split: reading them, and resolving `config.data.train_sites`.

A dataset declares its group attributes in `DataInfo.attributes` and every record carries them (the
synthetic set: 'site', 0 = A, 1 = B). Site names come from the TFDS ClassLabel feature when the source
has one; ids (ints or digit strings) are accepted for any dataset with a 'site' attribute.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

SITE_KEY = "site"


def record_values(source, keys: Sequence[str]) -> dict[str, np.ndarray]:
    """{key: stacked values} of every record of `source`, in source order (one pass over the records).

    'index' falls back to the record's position when a record has none (as in evaluation)."""
    values: dict[str, list] = {k: [] for k in keys}
    for pos in range(len(source)):
        record = source[pos]
        for k in keys:
            values[k].append(record.get("index", pos) if k == "index" else record[k])
    return {k: np.stack([np.asarray(v) for v in vs]) if vs else np.zeros(0, np.int64)
            for k, vs in values.items()}


def values_by_index(source, key: str, index: np.ndarray) -> np.ndarray:
    """`key` of the records whose 'index' is each entry of `index` (e.g. a predictions file's order)."""
    table = record_values(source, ("index", key))
    lookup = {int(i): v for i, v in zip(table["index"], table[key])}
    missing = [int(i) for i in index if int(i) not in lookup]
    if missing:
        raise KeyError(f"examples with index {missing[:5]} are not in the split (reading {key!r})")
    return np.stack([np.asarray(lookup[int(i)]) for i in index]) if len(index) else np.zeros(0, np.int64)


def site_names(source) -> tuple[str, ...] | None:
    """Names of the site ids (the TFDS ClassLabel's names), or None when the source does not know them."""
    try:
        return tuple(source.dataset_info.features[SITE_KEY].names)
    except (AttributeError, KeyError, TypeError):
        return None


def resolve_sites(requested: Sequence, info, source, present: np.ndarray) -> tuple[int, ...]:
    """Site ids named by `config.data.train_sites` (names or ids); ValueError naming the key when the
    dataset has no sites or a site is unknown. `present`: the site ids found in the training split."""
    requested = tuple(requested)
    key = f"config.data.train_sites={requested!r}"
    if SITE_KEY not in info.attributes:
        raise ValueError(f"{key}, but dataset {info.name!r} has no sites (its per-example attributes: "
                         f"{list(info.attributes)}); set config.data.train_sites=() for all data")
    names = site_names(source)
    valid_ids = sorted({int(v) for v in np.asarray(present).reshape(-1)} | set(range(len(names or ()))))
    ids = []
    for site in requested:
        if names is not None and str(site) in names:
            ids.append(names.index(str(site)))
        elif isinstance(site, (int, np.integer)) or (isinstance(site, str) and site.isdigit()):
            if int(site) not in valid_ids:
                raise ValueError(f"{key}: site id {int(site)} is not in dataset {info.name!r} "
                                 f"(ids {valid_ids}{', names ' + str(list(names)) if names else ''})")
            ids.append(int(site))
        else:
            raise ValueError(f"{key}: unknown site {site!r} in dataset {info.name!r}; valid: "
                             f"{list(names) if names else []} or ids {valid_ids}")
    return tuple(sorted(set(ids)))
