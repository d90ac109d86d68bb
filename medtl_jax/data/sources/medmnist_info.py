"""Metadata of the twelve MedMNIST v2 2D subsets (and their MedMNIST+ larger sizes).

Facts (tasks, label names, channels, official split counts, Zenodo files and MD5s) are those published
with MedMNIST v2 (Yang et al., Scientific Data 2023) and the MedMNIST+ release in Zenodo record
10519652 (the `medmnist` package, version 3.0.2, records the same values). Written here as our own table
so that building a dataset needs neither the `medmnist` package nor the network.

Note that record 10519652 re-released the three Organ{A,C,S}MNIST subsets with slightly smaller
splits than the first v2 record (6496656); the counts below are those of the current files.
"""

from __future__ import annotations

import dataclasses

ZENODO_RECORD = "10519652"
ZENODO_FILES = f"https://zenodo.org/records/{ZENODO_RECORD}/files"
SIZES = (28, 64, 128, 224)
# Task names as MedMNIST writes them.
TASKS = ("binary-class", "multi-class", "multi-label, binary-class", "ordinal-regression")


@dataclasses.dataclass(frozen=True)
class SubsetInfo:
    """One MedMNIST 2D subset: what it is and where its files live.

    `md5` maps image size -> MD5 of the official file; a size whose MD5 is None is downloaded without
    verification (none is None today: every published file has one).
    """

    name: str
    task: str
    label_names: tuple[str, ...]
    n_channels: int
    splits: dict[str, int]  # 'train' / 'val' / 'test' -> number of examples (MedMNIST split names)
    md5: dict[int, str | None]
    license: str = "CC BY 4.0"

    @property
    def sizes(self) -> tuple[int, ...]:
        """Image sizes available for this subset."""
        return tuple(sorted(self.md5))

    @property
    def num_labels(self) -> int:
        """Number of classes (single-label tasks) or of binary labels (multi-label tasks)."""
        return len(self.label_names)

    @property
    def multi_label(self) -> bool:
        return self.task == "multi-label, binary-class"

    def filename(self, size: int) -> str:
        """Official file name: `<subset>.npz` at 28 pixels, `<subset>_<size>.npz` otherwise."""
        return f"{self.name}.npz" if size == 28 else f"{self.name}_{size}.npz"

    def url(self, size: int) -> str:
        """Official download address of the file at `size`."""
        return f"{ZENODO_FILES}/{self.filename(size)}?download=1"


_ORGANS = ("bladder", "femur-left", "femur-right", "heart", "kidney-left", "kidney-right", "liver",
           "lung-left", "lung-right", "pancreas", "spleen")


def _md5s(m28: str, m64: str, m128: str, m224: str) -> dict[int, str | None]:
    return {28: m28, 64: m64, 128: m128, 224: m224}


_SUBSETS = (
    SubsetInfo(
        name="pathmnist", task="multi-class",
        label_names=("adipose", "background", "debris", "lymphocytes", "mucus", "smooth muscle",
                     "normal colon mucosa", "cancer-associated stroma",
                     "colorectal adenocarcinoma epithelium"),
        n_channels=3, splits={"train": 89996, "val": 10004, "test": 7180},
        md5=_md5s("a8b06965200029087d5bd730944a56c1", "55aa9c1e0525abe5a6b9d8343a507616",
                  "ac42d08fb904d92c244187169d1fd1d9", "2c51a510bcdc9cf8ddb2af93af1eadec")),
    SubsetInfo(
        name="chestmnist", task="multi-label, binary-class",
        label_names=("atelectasis", "cardiomegaly", "effusion", "infiltration", "mass", "nodule",
                     "pneumonia", "pneumothorax", "consolidation", "edema", "emphysema", "fibrosis",
                     "pleural", "hernia"),
        n_channels=1, splits={"train": 78468, "val": 11219, "test": 22433},
        md5=_md5s("02c8a6516a18b556561a56cbdd36c4a8", "9de6cd0b934ebb5b7426cfba5efbae16",
                  "db107e5590b27930b62dbaf558aebee3", "45bd33e6f06c3e8cdb481c74a89152aa")),
    SubsetInfo(
        name="dermamnist", task="multi-class",
        label_names=("actinic keratoses and intraepithelial carcinoma", "basal cell carcinoma",
                     "benign keratosis-like lesions", "dermatofibroma", "melanoma",
                     "melanocytic nevi", "vascular lesions"),
        n_channels=3, splits={"train": 7007, "val": 1003, "test": 2005},
        md5=_md5s("0744692d530f8e62ec473284d019b0c7", "b70a2f5635c6199aeaa28c31d7202e1f",
                  "2defd784463fa5243564e855ed717de1", "8974907d8e169bef5f5b96bc506ae45d"),
        license="CC BY-NC 4.0"),
    SubsetInfo(
        name="octmnist", task="multi-class",
        label_names=("choroidal neovascularization", "diabetic macular edema", "drusen", "normal"),
        n_channels=1, splits={"train": 97477, "val": 10832, "test": 1000},
        md5=_md5s("c68d92d5b585d8d81f7112f81e2d0842", "e229e9440236b774d9f0dfef9d07bdaf",
                  "0a97e76651ace45c5d943ee3f65b63ae", "abc493b6d529d5de7569faaef2773ba3")),
    SubsetInfo(
        name="pneumoniamnist", task="binary-class", label_names=("normal", "pneumonia"),
        n_channels=1, splits={"train": 4708, "val": 524, "test": 624},
        md5=_md5s("28209eda62fecd6e6a2d98b1501bb15f", "8f4eceb4ccffa70c672198ea285246c6",
                  "05b46931834c231683c68f40c47b2971", "d6a3c71de1b945ea11211b03746c1fe1")),
    SubsetInfo(
        name="retinamnist", task="ordinal-regression", label_names=("0", "1", "2", "3", "4"),
        n_channels=3, splits={"train": 1080, "val": 120, "test": 400},
        md5=_md5s("bd4c0672f1bba3e3a89f0e4e876791e4", "afda852cc34dcda56f86ad2b2457dbcc",
                  "e48e916a24454daf90583d4e6efb1a18", "eae7e3b6f3fcbda4ae613ebdcbe35348")),
    SubsetInfo(
        # Normal and benign are merged into the positive class, malignant is class 0.
        name="breastmnist", task="binary-class", label_names=("malignant", "normal, benign"),
        n_channels=1, splits={"train": 546, "val": 78, "test": 156},
        md5=_md5s("750601b1f35ba3300ea97c75c52ff8f6", "742edef2a1fd1524b2efff4bd7ba9364",
                  "363e4b3f8d712e9b5de15470a2aaadf1", "b56378a6eefa9fed602bb16d192d4c8b")),
    SubsetInfo(
        name="bloodmnist", task="multi-class",
        label_names=("basophil", "eosinophil", "erythroblast",
                     "immature granulocytes(myelocytes, metamyelocytes and promyelocytes)",
                     "lymphocyte", "monocyte", "neutrophil", "platelet"),
        n_channels=3, splits={"train": 11959, "val": 1712, "test": 3421},
        md5=_md5s("7053d0359d879ad8a5505303e11de1dc", "2b94928a2ae4916078ca51e05b6b800b",
                  "adace1e0ed228fccda1f39692059dd4c", "b718ff6835fcbdb22ba9eacccd7b2601")),
    SubsetInfo(
        name="tissuemnist", task="multi-class",
        label_names=("Collecting Duct, Connecting Tubule", "Distal Convoluted Tubule",
                     "Glomerular endothelial cells", "Interstitial endothelial cells", "Leukocytes",
                     "Podocytes", "Proximal Tubule Segments", "Thick Ascending Limb"),
        n_channels=1, splits={"train": 165466, "val": 23640, "test": 47280},
        md5=_md5s("ebe78ee8b05294063de985d821c1c34b", "123ece2eba09d0aa5d698fda57103344",
                  "61b955355d7425a89687b06cca3ce0c2", "b077128c4a949f0a4eb01517f9037b9c")),
    SubsetInfo(
        name="organamnist", task="multi-class", label_names=_ORGANS,
        n_channels=1, splits={"train": 34561, "val": 6491, "test": 17778},
        md5=_md5s("68e3f8846a6bd62f0c9bf841c0d9eacc", "2dcccc29b88e6da5a01161ef20cda288",
                  "eeae80d0a227a8d099027e1b3cfd3b60", "50747347e05c87dd3aaf92c49f9f3170")),
    SubsetInfo(
        name="organcmnist", task="multi-class", label_names=_ORGANS,
        n_channels=1, splits={"train": 12975, "val": 2392, "test": 8216},
        md5=_md5s("b9ceb9546e10131b32923c5bbeaea2b1", "3ce34a8724ea6f548e6db4744d03b6a9",
                  "773c1f009daa3fe5d9a2a201b2a7ed94", "050f5e875dc056f6768abf94ec9995d1")),
    SubsetInfo(
        name="organsmnist", task="multi-class", label_names=_ORGANS,
        n_channels=1, splits={"train": 13932, "val": 2452, "test": 8827},
        md5=_md5s("9ab87b696fb54e2a387ebe992d6ed5f1", "53a6d115339d874c25e309a994ff46d3",
                  "ded0c5fa01a95dc4978b956f613e9b8e", "b354719e553fbbb2513d5533f52a4cb1")),
)

MEDMNIST_2D: dict[str, SubsetInfo] = {s.name: s for s in _SUBSETS}
