"""Sweeps: grid expansion, run names, preset plans, statuses, refusal of changed configs, printed commands
(parsed back with the trainer's own flag parser), the per-site predictions, and one real two-run sweep."""

import json
import os
import pathlib
import shlex

import numpy as np
import pytest

from launch import sweep as sweep_cli
from medtl_jax.runtime.atomic_io import write_json_atomic
from medtl_jax.sweep import Grid, Runs, Sweep, load_sweep, make_plan
from medtl_jax.sweep.naming import run_name, unique_names
from medtl_jax.sweep.runner import SweepConfigChanged, run_plan
from medtl_jax.sweep.status import config_differences

TINY = {"data.subset": "tiny", "data.input_size": 32, "model.name": "cbr_tiny", "model.init": "scratch",
        "optimizer.name": "sgd", "optimizer.lr": 0.05, "optimizer.weight_decay": 0.0, "schedule.name": "constant",
        "schedule.warmup_epochs": 0.0, "train.epochs": 1, "train.batch_size": 16, "train.eval_batch_size": 32,
        "train.log_every_steps": 2, "eval.bootstrap_samples": 20}
SWEEP_FILE = '''
from medtl_jax.sweep import Grid, Runs, Sweep
TINY = {tiny!r}

def get_sweep(arg=None):
    return Sweep(name="tiny", config="configs/default.py:scratch", fixed={{**TINY, "data.data_dir": arg}},
                 parts=[Grid("grid", {{"seed": [0, 1]}}), Runs("more", [{{"train.epochs": 2}}, {{"seed": 7}}])])
'''


def _sweep_file(tmp_path) -> str:
    path = tmp_path / "tiny_sweep.py"
    path.write_text(SWEEP_FILE.format(tiny=TINY))
    return str(path)


# ---------------------------------------------------------------------------------------------------
# Expansion and names.
# ---------------------------------------------------------------------------------------------------

def test_grid_is_the_product_in_field_order_and_runs_are_copied():
    grid = Grid("g", {"model.name": ["a", "b"], "seed": [0, 1, 2]})
    assert grid.expand() == [{"model.name": m, "seed": s} for m in ("a", "b") for s in (0, 1, 2)]
    runs = [{"seed": 1}]
    expanded = Runs("r", runs).expand()
    expanded[0]["seed"] = 9
    assert runs == [{"seed": 1}]
    with pytest.raises(ValueError, match=r"part 'g': field 'seed' needs a non-empty list of values, got 3"):
        Grid("g", {"seed": 3}).expand()


def test_names_are_readable_stable_sanitized_and_unique():
    over = {"model.name": "resnet50", "model.init": "imagenet", "data.train_fraction": 0.05, "seed": 1}
    assert run_name(over, {}) == "model=resnet50,init=imagenet,frac=0.05,seed=1"
    assert run_name({"data.train_sites": ("A", "B"), ":size": 28, "optimizer.lr": 1e-05}, {}) == \
        "sites=A+B,size=28,lr=1e-05"
    assert run_name({"data.train_sites": ()}, {"data.train_sites": "where"}) == "where=none"
    assert run_name({"data.manual_dir": "../x y/*"}, {}) == "data.manual_dir=.._x_y__"
    assert run_name({"data.subset": ".hidden"}, {}) == "data=.hidden"
    assert run_name({}, {}) == "base"
    long = run_name({"data.manual_dir": "d" * 300}, {})
    assert len(long) == 150 and long == run_name({"data.manual_dir": "d" * 300}, {})
    # 'a/b' and 'a_b' sanitise alike: both get a hash, whatever the order of the runs.
    runs = [{"data.subset": "a/b"}, {"data.subset": "a_b"}, {"data.subset": "c"}]
    names = unique_names(runs, {})
    assert len(set(names)) == 3 and names[2] == "data=c" and all(n.startswith("data=a_b~") for n in names[:2])
    assert unique_names(runs[::-1], {}) == names[::-1]


# ---------------------------------------------------------------------------------------------------
# Preset plans.
# ---------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("spec, runs, dropped, merged", [
    ("transfer_study.py:dataset=synthetic,quick", 20, 8, 2),
    ("transfer_study.py:dataset=pneumoniamnist,quick", 18, 8, 2),
    ("transfer_study.py:dataset=synthetic", 186, 18, 3),
    ("transfer_study.py:dataset=pneumoniamnist", 237, 24, 3),
    ("medmnist_v2.py:dataset=retinamnist,quick", 2, 0, 0),
    ("medmnist_v2.py:dataset=retinamnist", 24, 0, 0),
])
def test_preset_plans(spec, runs, dropped, merged, tmp_path):
    plan = make_plan(*load_sweep(f"configs/sweeps/{spec}"), tmp_path)
    assert (len(plan.runs), len(plan.dropped), len(plan.merged)) == (runs, dropped, merged)
    names = [r.name for r in plan.runs]
    assert len(set(names)) == len(names) and all("/" not in n and " " not in n for n in names)
    for r in plan.runs:  # no impossible run: CBR nets only from scratch
        assert not (r.config["model"]["name"].startswith("cbr") and r.config["model"]["init"] != "scratch"), r.name
    assert all("has no pretrained weights" in d["reason"] for d in plan.dropped)
    if "transfer_study" in spec:  # imbalance 'none' on the reference model is a benchmark run, listed in both parts
        shared = [r for r in plan.runs if r.parts == ["benchmark", "imbalance"]]
        assert len(shared) == merged and all(r.fields["loss.imbalance"] == "none" for r in shared)
        assert ("cross_site" in {p for r in plan.runs for p in r.parts}) == ("synthetic" in spec)


def test_medmnist_v2_reuses_the_config_files_recipe(tmp_path):
    plan = make_plan(*load_sweep("configs/sweeps/medmnist_v2.py:dataset=retinamnist"), tmp_path)
    by_name = {r.name: r.config for r in plan.runs}
    c28, c224 = by_name["model=resnet18,size=28,seed=0"], by_name["model=resnet18,size=224,seed=0"]
    assert (c28["model"]["stem"], c224["model"]["stem"], c224["data"]["resize_method"]) == ("cifar", "imagenet",
                                                                                            "nearest")
    assert (c28["train"]["epochs"], c28["optimizer"]["name"], c28["train"]["batch_size"]) == (100, "adam", 128)
    tl = by_name["model=resnet50,size=224,init=imagenet,recipe=transfer,seed=2"]
    assert (tl["model"]["init"], tl["train"]["epochs"], tl["data"]["resize_method"]) == ("imagenet", 10, "bilinear")


def test_bad_sweep_fields_are_named(tmp_path):
    bad = Sweep("x", "configs/default.py", [Grid("g", {"optimizer.lrr": [0.1]})])
    with pytest.raises(ValueError, match=r"'config\.optimizer\.lrr'; did you mean config\.optimizer\.lr"):
        make_plan(bad, "x", tmp_path)
    clash = Sweep("x", "configs/medmnist.py", [Grid("g", {":model": ["resnet18"], "model.name": ["resnet50"]})])
    with pytest.raises(ValueError, match=r"':model' and 'model.name' both shorten to 'model'"):
        make_plan(clash, "x", tmp_path)
    wrong = Sweep("x", "configs/default.py", [Grid("g", {"optimizer.lr": ["fast"]})])
    with pytest.raises(ValueError, match=r"sweep field 'config\.optimizer\.lr' = 'fast'"):
        make_plan(wrong, "x", tmp_path)


# ---------------------------------------------------------------------------------------------------
# Commands, statuses, refusal.
# ---------------------------------------------------------------------------------------------------

def _parse_train_argv(argv: list[str]) -> tuple[dict, str]:
    """The config and workdir launch.train builds from `argv`, with its own flag parser."""
    from absl import flags
    from ml_collections import config_flags
    assert argv[:3] == ["python", "-m", "launch.train"]
    argv = ["launch.train", *argv[3:]]
    fv = flags.FlagValues()
    handle = config_flags.DEFINE_config_file("config", None, "", flag_values=fv, lock_config=True, sys_argv=argv)
    flags.DEFINE_string("workdir", None, "", flag_values=fv)
    fv(argv)
    return json.loads(handle.value.to_json_best_effort()), fv["workdir"].value


def test_printed_commands_parse_back_to_the_planned_configs(tmp_path, capsys):
    spec = "configs/sweeps/transfer_study.py:dataset=synthetic,quick"
    assert sweep_cli.main(["--sweep", spec, "--workdir", str(tmp_path), "--print-commands",
                           "--set", "data.data_dir=/data/tfds dir"]) == 0
    printed = capsys.readouterr().out.splitlines()
    assert printed == (tmp_path / "commands.txt").read_text().splitlines()
    plan = make_plan(*load_sweep(spec), tmp_path, {"data.data_dir": "/data/tfds dir"})
    assert len(printed) == len(plan.runs) == 20
    for line, run in zip(printed, plan.runs):
        config, workdir = _parse_train_argv(shlex.split(line))
        assert config == run.config and workdir == str(tmp_path / run.name)
        record = json.loads((tmp_path / run.name / "sweep_run.json").read_text())
        assert record["run"] == run.name and record["sweep"] == "transfer_study_synthetic_quick"
        assert set(record["fields"]) == {"model.name", "model.init", "data.train_fraction", "seed",
                                         "loss.imbalance", "data.train_sites"}
    sites_b = json.loads((tmp_path / "model=efficientnet_lite0,init=imagenet,frac=1.0,sites=B,seed=0" /
                          "sweep_run.json").read_text())
    assert sites_b["overrides"]["data.train_sites"] == ["B"] and sites_b["fields"]["loss.imbalance"] == "none"
    assert json.loads((tmp_path / "sweep.json").read_text())["runs"][0]["name"] == plan.runs[0].name


def _fake_finished(run_dir: pathlib.Path, config: dict, results: bool = True) -> None:
    write_json_atomic(run_dir / "config.json", config)
    if results:
        write_json_atomic(run_dir / "results.json", {"test": {"auc": 0.5}, "config": config})


def test_dry_run_statuses_skip_finished_and_refuse_changed_configs(tmp_path, capsys):
    spec = f"{_sweep_file(tmp_path)}:{tmp_path / 'tfds'}"
    root = tmp_path / "sweep"
    plan = make_plan(*load_sweep(spec), root)
    names = [r.name for r in plan.runs]
    assert names == ["seed=0", "seed=1", "epochs=2", "seed=7"]
    runs = {r.name: r for r in plan.runs}
    _fake_finished(root / "seed=0", runs["seed=0"].config)
    _fake_finished(root / "seed=1", runs["seed=1"].config, results=False)  # started, not finished
    (root / "epochs=2").mkdir(parents=True)
    (root / "epochs=2" / "FAILED").write_text("exit code 1\n")
    assert sweep_cli.main(["--sweep", spec, "--workdir", str(root), "--dry-run"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [ln.split()[:2] for ln in lines[:4]] == [["done", "seed=0"], ["partial", "seed=1"],
                                                    ["failed", "epochs=2"], ["todo", "seed=7"]]
    assert lines[4] == "sweep tiny: 4 runs: 1 done, 1 failed, 1 partial, 1 todo"
    assert not (root / "sweep.json").exists()  # a dry run writes nothing

    summary = run_plan(plan, only="seed=0")  # finished: skipped, nothing runs
    assert (summary.done, summary.failed, summary.skipped, summary.left) == (0, 0, 1, 0)
    assert json.loads((root / "sweep.json").read_text())["sweep"] == "tiny"

    changed = json.loads(json.dumps(runs["seed=0"].config))
    changed["train"]["epochs"] = 3
    _fake_finished(root / "seed=0", changed)
    assert config_differences(changed, runs["seed=0"].config) == ["train.epochs: 3 -> 1"]
    with pytest.raises(SweepConfigChanged, match=r"(?s)seed=0: train\.epochs: 3 -> 1"):
        run_plan(plan)
    assert sweep_cli.main(["--sweep", spec, "--workdir", str(root)]) == 2
    assert "--force" in capsys.readouterr().err


def test_predictions_carry_the_site_of_each_example(tmp_path):
    """The evaluator writes 'site' next to index/labels/scores (train_sites restricts validation only)."""
    from medtl_jax.train import trainer as train
    from medtl_jax.data import load_data
    from medtl_jax.data.subsets.sites import record_values
    from medtl_jax.runtime.run_folder import RunDir
    from tests.helpers.tiny_recipe import tiny_config

    over = {k: v for k, v in TINY.items() if k.split(".")[0] in ("model", "train")}
    config = tiny_config(str(tmp_path / "tfds"), **{**over, "model.stem": "imagenet", "data.train_sites": ("B",)})
    s = train.make_setup(config)
    s.parts.evaluator.final(train.create_state(config, s), RunDir(tmp_path))
    full = load_data(config.data).sources
    for split, name in (("validation", "val"), ("test", "test")):
        preds = np.load(tmp_path / f"predictions_{name}.npz")
        assert set(preds.files) == {"index", "labels", "scores", "site"}
        truth = record_values(full[split], ("index", "site"))
        lookup = dict(zip(truth["index"].tolist(), truth["site"].tolist()))
        np.testing.assert_array_equal(preds["site"], [lookup[i] for i in preds["index"].tolist()])
    assert set(np.load(tmp_path / "predictions_val.npz")["site"].tolist()) == {1}  # validation: site B only
    assert set(np.load(tmp_path / "predictions_test.npz")["site"].tolist()) == {0, 1}  # test: whole


def _env():
    return {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=1", "JAX_PLATFORMS": "cpu"}


def test_failed_runs_are_recorded_and_the_sweep_goes_on(tmp_path):
    """Two runs whose trainer fails (an unknown dataset variant, found only when the data loads): each leaves
    FAILED with the error tail; a folder of another config is moved aside with --force, not deleted."""
    sweep = Sweep("failing", "configs/default.py:scratch", fixed={**TINY, "data.data_dir": str(tmp_path / "tfds")},
                  parts=[Grid("bad", {"data.subset": ["nope", "nope2"]})])
    plan = make_plan(sweep, "inline", tmp_path / "sweep")
    old = tmp_path / "sweep" / "data=nope"
    _fake_finished(old, {**plan.runs[0].config, "seed": 5})  # a finished run of another config
    with pytest.raises(SweepConfigChanged, match=r"data=nope: seed: 5 -> 0"):
        run_plan(plan)
    lines = []
    summary = run_plan(plan, force=True, env=_env(), out=lines.append)
    assert summary.line("failing") == "sweep failing: 0 done, 2 failed, 0 skipped (finished before)", lines
    moved = list((tmp_path / "sweep" / ".replaced").glob("data=nope-*"))
    assert len(moved) == 1 and json.loads((moved[0] / "config.json").read_text())["seed"] == 5
    for name in ("nope", "nope2"):
        failed = (tmp_path / "sweep" / f"data={name}" / "FAILED").read_text()
        assert failed.startswith("exit code 2\ncommand: python -m launch.train --config configs/default.py:scratch")
        assert f"unknown synthetic variant {name!r}" in failed
    assert lines[0] == f"moved data=nope aside to {moved[0]} (--force)"


# ---------------------------------------------------------------------------------------------------
# One real sweep: two tiny runs (a fraction, a site), then a rerun that skips them.
# ---------------------------------------------------------------------------------------------------

@pytest.mark.slow  # about 25-50 s on a busy 2-core CPU: two trainer processes
def test_real_tiny_sweep_trains_two_runs_and_skips_them_on_rerun(tmp_path):
    from medtl_jax.data import load_data
    from medtl_jax.data.subsets.sites import record_values
    from medtl_jax.runtime.run_folder import RunDir
    from tests.helpers.tiny_recipe import tiny_config

    data_dir = str(tmp_path / "tfds")
    load_data(tiny_config(data_dir).data)  # built once, before the subprocesses read it
    sweep = Sweep("real", "configs/default.py:scratch", fixed={**TINY, "data.data_dir": data_dir},
                  parts=[Runs("subsets", [{"data.train_fraction": 0.5}, {"data.train_sites": ("B",)}])])
    plan = make_plan(sweep, "inline", tmp_path / "sweep")
    assert [r.name for r in plan.runs] == ["frac=0.5", "sites=B"]
    lines = []
    summary = run_plan(plan, env=_env(), out=lines.append)
    assert summary.line("real") == "sweep real: 2 done, 0 failed, 0 skipped (finished before)", lines

    train_full = record_values(load_data(tiny_config(data_dir).data).sources["train"], ("label", "site"))
    half = json.loads((tmp_path / "sweep" / "frac=0.5" / "results.json").read_text())
    assert half["data"]["train_examples_used"] == sum(-(-c // 2) for c in np.bincount(train_full["label"]))
    assert half["timing"]["steps_per_epoch"] == half["data"]["train_examples_used"] // 16
    site_b = json.loads((tmp_path / "sweep" / "sites=B" / "results.json").read_text())
    assert site_b["data"]["train_examples_used"] == int(np.sum(train_full["site"] == 1))
    assert set(np.load(tmp_path / "sweep" / "sites=B" / "predictions_test.npz")["site"].tolist()) == {0, 1}
    record = json.loads((tmp_path / "sweep" / "sites=B" / "sweep_run.json").read_text())
    assert record["overrides"] == {"data.train_sites": ["B"]} and record["parts"] == ["subsets"]

    again = run_plan(plan, env=_env())  # both finished: skipped, nothing runs
    assert (again.done, again.failed, again.skipped, again.left) == (0, 0, 2, 0)
