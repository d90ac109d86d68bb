"""Sweep reports end to end on fake sweep folders (and Grad-CAM on one tiny real run)."""

import csv
import json
import pathlib

import ml_collections
import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from configs.base import base_config
from launch import report as report_cli
from medtl_jax.tasks.classification.metrics import classification_report
from medtl_jax.report.collect import collect
from medtl_jax.report.study_report import ReportOptions, build_report
from tests.helpers.segmentation_folders import write_seg_folder

MODELS, INITS, FRACTIONS, SEEDS = ("resnet18", "densenet121"), ("imagenet", "scratch"), (0.1, 1.0), (0, 1)
N_TEST = 240


def _labels():
    return (np.random.default_rng(123).uniform(size=N_TEST) < 0.4).astype(np.int32)


def _sites():
    return (np.arange(N_TEST) % 3 == 0).astype(np.int32)  # site 1: every third example


def _scores(model, init, fraction, seed):
    """Synthetic test scores: ImageNet init separates the classes far better than scratch."""
    strength = (2.0 if init == "imagenet" else 0.4) * (1.0 if fraction == 1.0 else 0.8)
    rng = np.random.default_rng([MODELS.index(model), INITS.index(init), int(fraction * 10), seed])
    logit = strength * (2 * _labels() - 1) + rng.normal(size=N_TEST) + 0.5 * _sites()
    return (1 / (1 + np.exp(-logit))).astype(np.float32)


def write_run(folder: pathlib.Path, overrides: dict, scores, *, sites=None, finished=True, sweep_record=True,
              data_name="synthetic"):
    """A run folder as the trainer (+ sweep launcher) leaves it."""
    folder.mkdir(parents=True)
    cfg = base_config().to_dict()
    cfg["data"]["name"], cfg["train"]["epochs"] = data_name, 3
    cfg["data"]["train_fraction"] = 1.0
    for key, value in overrides.items():
        if key == "seed":
            cfg["seed"] = value
        else:
            group, name = key.split(".")
            cfg[group][name] = value
    (folder / "config.json").write_text(json.dumps(cfg))
    if sweep_record:
        (folder / "sweep_run.json").write_text(json.dumps({"sweep": "fake", "run": folder.name,
                                                           "overrides": overrides}))
    if not finished:
        return
    labels = _labels()
    test = classification_report("binary", labels, scores, bootstrap_samples=0)
    results = {"val": test, "test": test, "config": cfg,
               "selection": {"metric": "auc", "best_epoch": 2, "best_step": 20, "val_score": test["auc"]},
               "data": {"name": data_name, "task": "binary", "num_classes": 2, "label_names": ["normal", "lesion"],
                        "channels": 1, "image_size": 32, "splits": {"train": 100, "validation": 50, "test": N_TEST},
                        "attributes": ["site"]},
               "timing": {"train_seconds": 1.0, "steps": 30, "steps_per_epoch": 10},
               "environment": {"jax": "0.10.2", "backend": "cpu", "devices": 8, "processes": 1}}
    (folder / "results.json").write_text(json.dumps(results))
    log = [{"step": s, "split": "train", "loss": 1.0 / s} for s in (5, 10, 15, 20, 25, 30)]
    log += [{"step": s, "split": "val", "auc": 0.5 + s / 100} for s in (10, 20, 30)]
    (folder / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in log))
    extra = {} if sites is None else {"site": sites}
    for split in ("val", "test"):
        np.savez(folder / f"predictions_{split}.npz", index=np.arange(N_TEST), labels=labels, scores=scores, **extra)


def fake_sweep(root: pathlib.Path, *, sites=False, sweep_record=True, unfinished=True) -> pathlib.Path:
    for model in MODELS:
        for init in INITS:
            for fraction in FRACTIONS:
                for seed in SEEDS:
                    overrides = {"model.name": model, "model.init": init, "data.train_fraction": fraction,
                                 "seed": seed}
                    write_run(root / f"{model}_{init}_{fraction}_s{seed}", overrides,
                              _scores(model, init, fraction, seed), sites=_sites() if sites else None,
                              sweep_record=sweep_record)
    if unfinished:
        write_run(root / "resnet18_imagenet_0.1_s2", {"model.name": "resnet18", "model.init": "imagenet",
                                                      "data.train_fraction": 0.1, "seed": 2}, None,
                  finished=False, sweep_record=sweep_record)
    return root


def _read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = fake_sweep(tmp_path_factory.mktemp("sweep"))
    written = build_report(root, options=ReportOptions(bootstrap=200, gradcam=0))
    return root, written


def test_report_tables_and_numbers(built):
    root, written = built
    text = (root / "report.md").read_text()
    assert written["report"] == root / "report.md"
    assert "Settings that vary: `model.name`, `model.init`, `data.train_fraction`, `seed`" in text
    # one main-table row per group with its seeds and run count
    for model in MODELS:
        for init in INITS:
            for fraction in FRACTIONS:
                label = f"model={model}, init={init}, train_fraction={fraction:g}"
                row = next(ln for ln in text.splitlines() if ln.startswith(f"| {label} |"))
                assert row.endswith("| 0,1 | 2 |"), row
    assert "selection rule: the checkpoint with the best validation auc, evaluated once on test" in text
    assert "- 3 epochs, global batch 32" in text and "optimizer adamw, lr 0.001, weight decay 0.01" in text
    assert "Holm–Bonferroni" in text
    groups = _read_csv(root / "report_groups.csv")
    assert len(groups) == 8
    for g in groups:
        per_seed = [roc_auc_score(_labels(), _scores(g["model.name"], g["model.init"],
                                                     float(g["data.train_fraction"]), s)) for s in SEEDS]
        assert float(g["test_auc_mean"]) == pytest.approx(np.mean(per_seed), abs=1e-12)
        assert float(g["test_auc_std"]) == pytest.approx(np.std(per_seed, ddof=1), abs=1e-12)
        assert float(g["test_auc_ci95_lo"]) < np.mean(per_seed) < float(g["test_auc_ci95_hi"])
        assert g["seeds"] == "0 1" and g["n_runs"] == "2"
    runs = _read_csv(root / "report_runs.csv")
    assert len(runs) == 17 and sum(r["status"] == "unfinished" for r in runs) == 1
    one = next(r for r in runs if r["run"] == "densenet121_scratch_0.1_s1")
    assert float(one["test_auc"]) == pytest.approx(roc_auc_score(_labels(), _scores("densenet121", "scratch",
                                                                                    0.1, 1)), abs=1e-12)


def test_delong_finds_imagenet_better_than_scratch(built):
    root, _ = built
    rows = _read_csv(root / "report_comparisons.csv")
    inits = [r for r in rows if r["differs_in"] == "model.init"]
    models = [r for r in rows if r["differs_in"] == "model.name"]
    assert len(inits) == 4 and len(models) == 4 and len(rows) == 8
    for r in inits:
        assert "init=imagenet" in r["a"] and "init=scratch" in r["b"]
        assert r["method"] == "DeLong" and r["a_wins"] == "2/2" and r["seeds"] == "0 1"
        assert float(r["delta_auc"]) > 0.2 and float(r["p_holm"]) < 0.05
        assert float(r["delta_auc"]) == pytest.approx(float(r["auc_a"]) - float(r["auc_b"]), abs=1e-12)
    p = np.array([float(r["p"]) for r in rows])
    from medtl_jax.report.stats import holm
    np.testing.assert_allclose([float(r["p_holm"]) for r in rows], holm(p))
    text = (root / "report.md").read_text()
    assert "| model=resnet18, init=imagenet, train_fraction=1 vs model=resnet18, init=scratch, train_fraction=1 |" \
           in text


def test_figures_data_efficiency_and_unfinished(built):
    root, written = built
    for name in ("data_efficiency", "roc", "reliability", "training"):
        assert written[name].is_file() and written[name].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert written[name].parent == root / "report_files"
    text = (root / "report.md").read_text()
    assert "## Data efficiency" in text and "![data efficiency](report_files/data_efficiency.png)" in text
    assert "| setting | 0.1 | 1 |" in text
    assert "## Unfinished runs" in text and "- `resnet18_imagenet_0.1_s2`" in text
    assert "## Cross-site" not in text and "## Grad-CAM" not in text and "## Class imbalance" not in text


def test_cross_site_table(tmp_path):
    for train_sites in (["A"], ["B"]):
        for seed in SEEDS:
            scores = _scores("resnet18", "imagenet" if train_sites == ["A"] else "scratch", 1.0, seed)
            write_run(tmp_path / f"{train_sites[0]}_{seed}", {"data.train_sites": train_sites, "seed": seed}, scores,
                      sites=_sites())
    build_report(tmp_path, options=ReportOptions(bootstrap=0, gradcam=0))
    text = (tmp_path / "report.md").read_text()
    assert "## Cross-site" in text and "Rows: the training sites (`data.train_sites`" in text
    assert "| train (group) | test site 0 | test site 1 | all test |" in text
    keep = _sites() == 1
    for site, init in (("A", "imagenet"), ("B", "scratch")):
        on_1 = [roc_auc_score(_labels()[keep], _scores("resnet18", init, 1.0, s)[keep]) for s in SEEDS]
        on_all = [roc_auc_score(_labels(), _scores("resnet18", init, 1.0, s)) for s in SEEDS]
        row = next(ln for ln in text.split("## Cross-site")[1].splitlines()
                   if ln.startswith(f"| train_sites={site} |")).split(" | ")
        assert row[2] == f"{np.mean(on_1):.3f} ± {np.std(on_1, ddof=1):.3f}"
        assert row[3].rstrip(" |") == f"{np.mean(on_all):.3f} ± {np.std(on_all, ddof=1):.3f}"


def test_no_cross_site_table_when_training_sites_do_not_vary(tmp_path):
    root = fake_sweep(tmp_path / "s", sites=True, unfinished=False)
    build_report(root, options=ReportOptions(bootstrap=0, gradcam=0))
    assert "## Cross-site" not in (root / "report.md").read_text()


def test_settings_from_config_diff_without_sweep_records(tmp_path):
    root = fake_sweep(tmp_path / "s", sweep_record=False)
    sweep = collect(root)
    assert sweep.varying == ["model.name", "model.init", "data.train_fraction", "seed"]
    assert len(sweep.groups()) == 8 and len(sweep.unfinished) == 1


def test_imbalance_table_when_the_strategy_varies(tmp_path):
    for strategy in ("none", "focal"):
        for seed in SEEDS:
            write_run(tmp_path / f"{strategy}_{seed}", {"loss.imbalance": strategy, "seed": seed},
                      _scores("resnet18", "imagenet" if strategy == "focal" else "scratch", 1.0, seed))
    build_report(tmp_path, options=ReportOptions(bootstrap=0, gradcam=0))
    text = (tmp_path / "report.md").read_text()
    assert "## Class imbalance" in text and "| group | sensitivity | specificity | balanced ACC | AUC |" in text
    assert "| imbalance=focal |" in text
    rows = _read_csv(tmp_path / "report_comparisons.csv")  # neither init nor model varies: the strategy pair
    assert [r["differs_in"] for r in rows] == ["loss.imbalance"]


def _write_results(folder, task, test, overrides):
    folder.mkdir(parents=True)
    cfg = base_config().to_dict()
    cfg["seed"] = overrides.get("seed", 0)
    cfg["model"]["init"] = overrides.get("model.init", "imagenet")
    results = {"val": test, "test": test, "config": cfg, "selection": {"metric": "dice" if task == "segmentation"
                                                                        else "auc", "best_epoch": 1},
               "data": {"name": "fake", "task": task, "num_classes": 3, "splits": {"test": 90}},
               "environment": {"jax": "0.10.2", "backend": "cpu", "devices": 1, "processes": 1}}
    (folder / "config.json").write_text(json.dumps(cfg))
    (folder / "results.json").write_text(json.dumps(results))


def test_multiclass_sweep_uses_the_paired_bootstrap(tmp_path):
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, size=90)
    for init, strength in (("imagenet", 3.0), ("scratch", 0.2)):
        for seed in SEEDS:
            scores = rng.dirichlet(np.ones(3), size=90) + strength * np.eye(3)[labels]
            scores /= scores.sum(1, keepdims=True)
            folder = tmp_path / f"{init}_{seed}"
            _write_results(folder, "multiclass", classification_report("multiclass", labels, scores,
                                                                       bootstrap_samples=0),
                           {"model.init": init, "seed": seed})
            np.savez(folder / "predictions_test.npz", index=np.arange(90), labels=labels, scores=scores)
    build_report(tmp_path, options=ReportOptions(bootstrap=200, gradcam=0))
    (row,) = _read_csv(tmp_path / "report_comparisons.csv")
    assert (row["a"], row["b"], row["method"]) == ("init=imagenet", "init=scratch", "paired bootstrap")
    assert float(row["p_holm"]) < 0.05 and float(row["delta_auc"]) > 0.2
    assert "reliability" in (tmp_path / "report.md").read_text()


def test_segmentation_sweep_reports_dice_without_auc_tests(tmp_path):
    for init, dice in (("imagenet", (0.8, 0.84)), ("scratch", (0.7, 0.7))):
        for seed in SEEDS:
            test = {"dice": dice[seed], "iou": dice[seed] - 0.1, "hd95": 3.0, "accuracy": 0.95, "num_images": 2,
                    "per_image": [{"dice": dice[seed], "iou": 0.5, "hd95": 3.0}] * 2, "ids": ["a", "b"]}
            folder = tmp_path / f"{init}_{seed}"
            _write_results(folder, "segmentation", test, {"model.init": init, "seed": seed})
            np.savez(folder / "predictions_test.npz", ids=np.array(["a", "b"]), probs_0=np.zeros((4, 4, 1)))
    build_report(tmp_path, options=ReportOptions(bootstrap=100, gradcam=0))
    text = (tmp_path / "report.md").read_text()
    assert "| group | Dice | IoU | HD95 (px) | pixel ACC | seeds | n runs |" in text
    std = f"{np.std([0.8, 0.84], ddof=1):.3f}"
    assert f"| init=imagenet | 0.820 ± {std} | 0.720 ± {std} | 3.000 ± 0.000 | 0.950 ± 0.000 | 0,1 | 2 |" in text
    section = text.split("## Paired comparisons")[1].split("##")[0]
    assert "Segmentation runs have no per-example scores: no AUC tests" in section and "DeLong" not in section
    assert _read_csv(tmp_path / "report_comparisons.csv") == []
    assert not (tmp_path / "report_files" / "roc.png").exists()


def test_parts_of_a_planned_sweep_get_their_own_sections(tmp_path):
    """sweep_run.json exactly as launch.sweep writes it (the quick transfer study: benchmark, imbalance and
    cross-site parts, one run shared by two parts)."""
    from medtl_jax.sweep.plan import make_plan, sweep_run_json
    from medtl_jax.sweep.spec import load_sweep
    sweep, spec = load_sweep("configs/sweeps/transfer_study.py:dataset=synthetic,quick")
    plan = make_plan(sweep, spec, tmp_path)
    for run in plan.runs:
        f = run.fields
        strength = {"imagenet": 2.0, "mean_var": 1.0, "scratch": 0.4}[f["model.init"]]
        rng = np.random.default_rng([len(run.name), f["seed"], int(10 * f["data.train_fraction"])])
        logit = strength * (2 * _labels() - 1) + rng.normal(size=N_TEST) - (f["data.train_sites"] == ["A"]) * _sites()
        write_run(tmp_path / run.name, {}, 1 / (1 + np.exp(-logit)), sites=_sites(), sweep_record=False)
        (tmp_path / run.name / "config.json").write_text(json.dumps(run.config))
        (tmp_path / run.name / "sweep_run.json").write_text(json.dumps(sweep_run_json(plan, run)))
    build_report(tmp_path, options=ReportOptions(bootstrap=50, gradcam=0))
    text = (tmp_path / "report.md").read_text()
    assert "parts: benchmark, imbalance, cross_site." in text
    benchmark, imbalance, cross_site = (text.split(f"## Part `{p}`")[1].split("## Part")[0]
                                        for p in ("benchmark", "imbalance", "cross_site"))
    assert "### Data efficiency" in benchmark and "### Class imbalance" not in benchmark
    assert "| model=cbr_tiny, init=scratch |" in benchmark  # a data-efficiency line
    assert "| imbalance=class_weighted |" in imbalance and "### Class imbalance" in imbalance
    assert "| train_sites=A |" in cross_site and "| train_sites=B |" in cross_site and "### Cross-site" in cross_site
    assert "### Cross-site" not in benchmark + imbalance
    assert text.count("Paired comparisons: groups equal in every setting") == 1
    groups = _read_csv(tmp_path / "report_groups.csv")
    assert [sum(g["part"] == p for g in groups) for p in ("benchmark", "imbalance", "cross_site")] == [8, 2, 2]
    rows = _read_csv(tmp_path / "report_comparisons.csv")
    assert {(r["part"], r["differs_in"]) for r in rows} == {("benchmark", "model.init"), ("benchmark", "model.name"),
                                                           ("imbalance", "loss.imbalance"),
                                                           ("cross_site", "data.train_sites")}
    init_rows = [r for r in rows if r["differs_in"] == "model.init"]
    assert len(init_rows) == 4 and all("init=scratch" in r["b"] for r in init_rows)  # lite0 x 2 inits x 2 fractions
    from medtl_jax.report.stats import holm
    np.testing.assert_allclose([float(r["p_holm"]) for r in rows], holm([float(r["p"]) for r in rows]))
    shared = next(r for r in _read_csv(tmp_path / "report_runs.csv") if r["parts"] == "benchmark imbalance")
    assert shared["data.train_sites"] == "all" and shared["loss.imbalance"] == "none"


def test_segmentation_masks_figure(tmp_path):
    """Predicted vs true masks from predictions_val.npz and the run's own dataset (no model needed)."""
    from medtl_jax.data import load_data
    from medtl_jax.report.mask_figure import mask_overlay
    write_seg_folder(tmp_path / "seg", counts=(3, 3, 3), size=24, half=4)
    source = None
    for init in ("imagenet", "scratch"):
        folder = tmp_path / "sweep" / init
        per_image = [{"dice": 1.0, "iou": 1.0, "hd95": 0.0}] * 3
        _write_results(folder, "segmentation", {"dice": 1.0, "iou": 1.0, "hd95": 0.0, "per_image": per_image},
                       {"model.init": init})
        cfg = json.loads((folder / "config.json").read_text())
        cfg["data"].update(name="seg_folders", manual_dir=str(tmp_path / "seg"))
        (folder / "config.json").write_text(json.dumps(cfg))
        results = json.loads((folder / "results.json").read_text())
        results["val"] = results["test"]
        (folder / "results.json").write_text(json.dumps(results))
        if source is None:
            source = load_data(ml_collections.ConfigDict(cfg["data"])).sources["validation"]
        records = [source[i] for i in range(len(source))]
        probs = {f"probs_{i}": (r["mask"][..., None] > 0).astype(np.uint8) * 255 for i, r in enumerate(records)}
        if init == "scratch":  # the scratch run's first image is said to be another one: reported, not fatal
            ids = np.array(["zzz"] + [str(r["id"]) for r in records[1:]])
        else:
            ids = np.array([str(r["id"]) for r in records])
        np.savez(folder / "predictions_val.npz", ids=ids, **probs)
    written = build_report(tmp_path / "sweep", options=ReportOptions(bootstrap=0, gradcam=2))
    text = written["report"].read_text()
    assert "## Predicted vs true masks" in text and "![predicted vs true masks](report_files/masks.png)" in text
    assert written["masks"].is_file() and "## Grad-CAM" not in text
    assert "Masks could not be drawn for:" in text and "image 0 is 'zzz'" in text
    overlay = mask_overlay(records[0]["image"], records[0]["mask"], records[0]["mask"])
    fg = records[0]["mask"] > 0
    assert (overlay[fg][:, :2] == 255).all() and (overlay[~fg][:, :2] < 255).all()  # overlap is yellow


def test_failing_gradcam_is_reported_not_fatal(tmp_path):
    for seed in SEEDS:
        write_run(tmp_path / f"r{seed}", {"seed": seed}, _scores("resnet18", "imagenet", 1.0, seed),
                  data_name="no_such_dataset")
    build_report(tmp_path, options=ReportOptions(bootstrap=0, gradcam=2))
    text = (tmp_path / "report.md").read_text()
    assert "Grad-CAM could not be drawn for:" in text and "- `r0` (all runs):" in text
    assert "no_such_dataset" in text.split("Grad-CAM could not be drawn for:")[1]


def test_empty_or_missing_folder_is_an_error_naming_it(tmp_path, capsys):
    (tmp_path / "empty" / "junk").mkdir(parents=True)
    with pytest.raises(ValueError, match=f"sweep folder {tmp_path / 'empty'} holds no run folders"):
        build_report(tmp_path / "empty")
    assert report_cli.main([str(tmp_path / "nowhere")]) == 2
    assert f"error: sweep folder {tmp_path / 'nowhere'} does not exist" in capsys.readouterr().err


def test_broken_results_json_names_the_file(tmp_path):
    write_run(tmp_path / "r0", {"seed": 0}, _scores("resnet18", "imagenet", 1.0, 0))
    (tmp_path / "r0" / "results.json").write_text("{not json")
    with pytest.raises(ValueError, match=f"{tmp_path / 'r0' / 'results.json'} is not valid JSON"):
        collect(tmp_path)


def test_cli_writes_report_to_out_with_bh(tmp_path, capsys):
    root = fake_sweep(tmp_path / "s", unfinished=False)
    out = tmp_path / "elsewhere" / "study.md"
    assert report_cli.main([str(root), "--out", str(out), "--gradcam", "0", "--bootstrap", "50",
                            "--correction", "bh"]) == 0
    assert "report: " + str(out) in capsys.readouterr().out
    assert "Benjamini–Hochberg" in out.read_text() and (out.parent / "report_files" / "roc.png").is_file()
    rows = _read_csv(out.parent / "report_comparisons.csv")
    import scipy.stats
    np.testing.assert_allclose([float(r["p_bh"]) for r in rows],
                               scipy.stats.false_discovery_control([float(r["p"]) for r in rows]))


def test_reliability_bins_equal_a_hand_count():
    from medtl_jax.report.plots import reliability
    labels = np.array([0, 1, 1, 0, 1])
    scores = np.array([0.05, 0.15, 0.95, 0.92, 0.0])
    conf, freq, counts = reliability("binary", labels, scores, num_bins=10)
    assert counts.tolist() == [2, 1, 0, 0, 0, 0, 0, 0, 0, 2]  # 0 joins the first bin
    assert conf[0] == pytest.approx(0.025) and freq[0] == 0.5 and freq[9] == 0.5 and np.isnan(freq[5])
    conf, freq, counts = reliability("multiclass", np.array([0, 2]), np.array([[0.7, 0.2, 0.1], [0.5, 0.1, 0.4]]),
                                     num_bins=2)
    assert counts.tolist() == [1, 1] and freq.tolist() == [0.0, 1.0] and conf.tolist() == [0.5, 0.7]


@pytest.mark.slow  # ~2 min on one shared core: builds the tiny dataset and trains an epoch
def test_gradcam_on_a_tiny_trained_run(tmp_path):
    """One real run (1 epoch, tiny synthetic 32 px): the report rebuilds it and draws Grad-CAM overlays."""
    from medtl_jax.train import trainer as train
    from tests.helpers.tiny_recipe import tiny_config
    config = tiny_config(str(tmp_path / "tfds"), **{"train.epochs": 1})
    train.train_and_evaluate(config, tmp_path / "sweep" / "run0")
    written = build_report(tmp_path / "sweep", options=ReportOptions(bootstrap=50, gradcam=2))
    text = written["report"].read_text()
    assert "## Grad-CAM" in text and "could not be drawn" not in text, text
    assert "![Grad-CAM](report_files/gradcam.png)" in text and written["gradcam"].is_file()
    assert "## Test results" in text and "| all runs |" in text
