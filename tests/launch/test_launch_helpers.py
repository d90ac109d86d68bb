"""launch.tpu_pod and launch.slurm: the exact commands and batch script they produce.

Nothing reaches a TPU pod or a SLURM cluster here: gcloud, sbatch, srun and the workers' python are
small recording fakes on PATH (or absent), and the generated shell text is run through a real shell.
"""

import json
import os
import pathlib
import shlex
import stat
import subprocess
import sys
import tarfile

import pytest

from launch import slurm, tpu_pod
from launch.slurm import SlurmArgs, sbatch_script
from launch.tpu_pod import PodArgs, pod_commands
from tests.helpers.paths import REPO_ROOT

CONFIG = "configs/medmnist.py:dataset=retinamnist,model=resnet18"
TPU_VM = ["gcloud", "compute", "tpus", "tpu-vm"]


def _pod_args(**kw) -> PodArgs:
    base = dict(tpu="pod-v4-32", zone="us-central2-b", config=CONFIG, workdir="gs://bucket/runs/retina",
                jax_version="0.10.2", code_tarball="/tmp/code.tar.gz")
    return PodArgs(**{**base, **kw})


def _executable(path: pathlib.Path, text: str) -> pathlib.Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


def _recorder(bin_dir: pathlib.Path, name: str, log: pathlib.Path, fail_if: str = "", code: int = 0):
    """A fake `name` that appends its argv as one JSON line to `log` (and exits `code` if `fail_if` is an arg)."""
    _executable(bin_dir / name, f"#!{sys.executable}\nimport json, sys\n"
                                f"open({str(log)!r}, 'a').write(json.dumps(sys.argv[1:]) + '\\n')\n"
                                f"sys.exit({code} if {fail_if!r} in sys.argv[1:] else 0)\n")


def _calls(log: pathlib.Path) -> list[list[str]]:
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


# ---------------------------------------------------------------------------------------------------
# TPU pod: command assembly
# ---------------------------------------------------------------------------------------------------

def test_pod_commands_exact():
    cmds = pod_commands(_pod_args(project="my-proj", overrides=("--config.optimizer.lr=0.01",)))
    target = ["--worker=all", "--zone=us-central2-b", "--project=my-proj"]
    assert cmds == [
        [*TPU_VM, "scp", "/tmp/code.tar.gz", "pod-v4-32:/tmp/medtl-jax-code.tar.gz", *target],
        [*TPU_VM, "ssh", "pod-v4-32", *target,
         "--command=mkdir -p ~/medtl-jax && tar -xzf /tmp/medtl-jax-code.tar.gz -C ~/medtl-jax && "
         "cd ~/medtl-jax && python3 -m pip install -e . 'jax[tpu]==0.10.2'"],
        [*TPU_VM, "ssh", "pod-v4-32", *target,
         "--command=cd ~/medtl-jax && python3 -m launch.train --config "
         "configs/medmnist.py:dataset=retinamnist,model=resnet18 --workdir gs://bucket/runs/retina "
         "--config.optimizer.lr=0.01"],
    ]


def test_pod_commands_leave_project_to_gcloud_when_not_given():
    cmds = pod_commands(_pod_args())
    assert [c[6:8] for c in cmds[1:]] == [["--worker=all", "--zone=us-central2-b"]] * 2
    assert not any(a.startswith("--project") for c in cmds for a in c)


def test_background_run_is_detached_with_a_log():
    run = pod_commands(_pod_args(background=True))[2][-1]
    assert run == ("--command=cd ~/medtl-jax && nohup python3 -m launch.train --config "
                   "configs/medmnist.py:dataset=retinamnist,model=resnet18 --workdir gs://bucket/runs/retina "
                   "> train.log 2>&1 < /dev/null &")


def test_overrides_with_spaces_and_colons_survive_the_local_and_the_worker_shell(tmp_path):
    overrides = ("--config.data.note=two words: here", "--config.data.root=/mnt/a b", "--config.train.tag=it's")
    fake_python = _executable(tmp_path / "bin" / "python", '#!/bin/sh\nfor a in "$@"; do printf "%s\\n" "$a"; done\n')
    cmd = pod_commands(_pod_args(overrides=overrides, repo_dir=str(tmp_path), python=str(fake_python)))[2]
    printed = shlex.join(cmd)  # what --dry_run shows
    assert "'\"'\"'--config.data.note=two words: here'\"'\"'" in printed
    local = shlex.split(printed)  # the local shell hands gcloud this argv...
    remote = local[-1].removeprefix("--command=")  # ...and the worker's shell runs this string
    out = subprocess.run(["sh", "-c", remote], capture_output=True, text=True, check=True).stdout
    assert out.splitlines() == ["-m", "launch.train", "--config", CONFIG, "--workdir", "gs://bucket/runs/retina",
                                *overrides]


def test_repo_dir_and_python_under_home_still_expand_on_the_worker():
    quoted = tpu_pod.remote_path("~/my code/medtl")
    assert quoted == "~/'my code/medtl'"
    out = subprocess.run(["sh", "-c", f"printf %s {quoted}"], capture_output=True, text=True, check=True,
                         env={"HOME": "/home/me", "PATH": os.environ["PATH"]}).stdout
    assert out == "/home/me/my code/medtl"
    install, train = (c[-1] for c in pod_commands(_pod_args(python="~/venv/bin/python"))[1:])
    assert install.endswith(" && cd ~/medtl-jax && ~/venv/bin/python -m pip install -e . 'jax[tpu]==0.10.2'")
    assert train.startswith("--command=cd ~/medtl-jax && ~/venv/bin/python -m launch.train --config ")


def test_jax_pin_is_read_from_setup_cfg(tmp_path):
    cfg = tmp_path / "setup.cfg"
    cfg.write_text("[options]\ninstall_requires =\n    jaxlib==9.9.9\n    jax==1.2.3\n    flax==0.1\n")
    assert tpu_pod.jax_version(cfg) == "1.2.3"
    cfg.write_text("[options]\ninstall_requires =\n    jaxlib==9.9.9\n    jax>=1.0\n")
    with pytest.raises(ValueError, match="pins no jax version"):
        tpu_pod.jax_version(cfg)
    real = tpu_pod.jax_version()  # the project's own pin ends up in the install command
    pinned = [line.strip() for line in (REPO_ROOT / "setup.cfg").read_text().splitlines()
              if line.strip().startswith("jax==")]
    assert pinned == [f"jax=={real}"]
    args, _ = tpu_pod.parse_args(["--tpu", "t", "--zone", "z", "--config", CONFIG, "--workdir", "gs://b/r"])
    assert pod_commands(args)[1][-1].endswith(f"'jax[tpu]=={real}'")


# ---------------------------------------------------------------------------------------------------
# TPU pod: the CLI (on a throwaway git checkout, with gcloud faked or missing)
# ---------------------------------------------------------------------------------------------------

@pytest.fixture
def checkout(tmp_path, monkeypatch):
    """A small git checkout standing in for the repo: tracked, untracked, ignored and deleted files."""
    repo = tmp_path / "repo"
    (repo / "configs").mkdir(parents=True)
    (repo / "runs" / "old").mkdir(parents=True)
    (repo / ".gitignore").write_text("/runs/\n")
    (repo / "configs" / "medmnist.py").write_text("def get_config(arg=None): ...\n")
    (repo / "gone.py").write_text("")
    (repo / "runs" / "old" / "ckpt.bin").write_bytes(b"x" * 100)
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    subprocess.run(["git", "-C", str(repo), "add", ".gitignore", "configs/medmnist.py", "gone.py"], check=True)
    (repo / "gone.py").unlink()  # tracked but deleted: nothing to copy
    (repo / "new_notes.md").write_text("untracked, not ignored\n")
    monkeypatch.setattr(tpu_pod, "REPO_ROOT", repo)
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path))
    return repo


POD_CLI = ["--tpu", "pod-v4-32", "--zone", "us-central2-b", "--project", "my-proj", "--config", CONFIG,
           "--workdir", "gs://bucket/runs/retina", "--config.data.note=a b:c"]


def test_git_files_lists_what_the_workers_need(checkout):
    assert tpu_pod.git_files(checkout) == [".gitignore", "configs/medmnist.py", "new_notes.md"]


def test_dry_run_prints_every_command_and_runs_nothing(checkout, tmp_path, monkeypatch, capsys):
    log = tmp_path / "gcloud.log"
    _recorder(tmp_path / "bin", "gcloud", log)
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}:{os.environ['PATH']}")
    tpu_pod.main([*POD_CLI, "--dry_run"])
    tarball = tmp_path / "medtl-jax-code.tar.gz"
    expected = pod_commands(_pod_args(project="my-proj", overrides=("--config.data.note=a b:c",),
                                      code_tarball=str(tarball), jax_version=tpu_pod.jax_version()))
    assert capsys.readouterr().out.splitlines() == [
        f"# pack 3 files of {checkout} (git ls-files) into {tarball}", *(shlex.join(c) for c in expected)]
    assert not log.exists() and not tarball.exists()


def test_run_packs_git_files_and_calls_gcloud_in_order(checkout, tmp_path, monkeypatch, capsys):
    log = tmp_path / "gcloud.log"
    _recorder(tmp_path / "bin", "gcloud", log)
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}:{os.environ['PATH']}")
    tpu_pod.main(POD_CLI)
    tarball = tmp_path / "medtl-jax-code.tar.gz"
    expected = pod_commands(_pod_args(project="my-proj", overrides=("--config.data.note=a b:c",),
                                      code_tarball=str(tarball), jax_version=tpu_pod.jax_version()))
    assert _calls(log) == [c[1:] for c in expected]
    with tarfile.open(tarball) as tar:
        assert sorted(tar.getnames()) == [".gitignore", "configs/medmnist.py", "new_notes.md"]
    assert [line.split("]")[0] for line in capsys.readouterr().out.splitlines()] == ["[copy", "[install", "[train"]


def test_failed_step_names_itself_and_stops(checkout, tmp_path, monkeypatch):
    log = tmp_path / "gcloud.log"
    _recorder(tmp_path / "bin", "gcloud", log, fail_if="ssh", code=3)
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}:{os.environ['PATH']}")
    with pytest.raises(SystemExit, match=r"the install step failed \(exit code 3\)"):
        tpu_pod.main(POD_CLI)
    assert [c[3] for c in _calls(log)] == ["scp", "ssh"]  # train never started


def test_missing_gcloud_is_a_clear_error(checkout, tmp_path, monkeypatch):
    (tmp_path / "empty").mkdir()
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    with pytest.raises(SystemExit, match="gcloud not found on PATH.*--dry_run"):
        tpu_pod.main(POD_CLI)
    assert not (tmp_path / "medtl-jax-code.tar.gz").exists()


@pytest.mark.parametrize("change, message", [
    ({"--workdir": "runs/retina"}, "--workdir 'runs/retina' must be on storage every host shares"),
    ({"extra": ["optimizer.lr=0.01"]}, "unrecognized argument 'optimizer.lr=0.01'"),
    ({"extra": ["--config.optimizer.lr", "0.01"]}, "unrecognized argument '--config.optimizer.lr'"),
])
def test_pod_cli_rejects_bad_arguments(checkout, capsys, change, message):
    argv = ["--tpu", "t", "--zone", "z", "--config", CONFIG, "--workdir", change.get("--workdir", "gs://b/r"),
            *change.get("extra", []), "--dry_run"]
    with pytest.raises(SystemExit) as exc:
        tpu_pod.main(argv)
    assert exc.value.code == 2 and message in capsys.readouterr().err


def test_pod_cli_rejects_a_config_that_would_not_be_copied(checkout):
    with pytest.raises(SystemExit, match="'configs/mine.py' is not among the files copied"):
        tpu_pod.main(["--tpu", "t", "--zone", "z", "--config", "configs/mine.py:x=1", "--workdir", "/nfs/r",
                      "--dry_run"])


# ---------------------------------------------------------------------------------------------------
# SLURM
# ---------------------------------------------------------------------------------------------------

def _slurm_args(**kw) -> SlurmArgs:
    base = dict(nodes=2, gpus_per_node=4, config=CONFIG, workdir="/shared/runs/retina",
                repo_dir="/shared/medtl-jax")
    return SlurmArgs(**{**base, **kw})


def test_sbatch_script_exact():
    text = sbatch_script(_slurm_args(partition="gpu", account="proj1", time="2-00:00:00", cpus_per_task=12,
                                     overrides=("--config.optimizer.lr=0.01",)))
    assert text == """\
#!/bin/bash
#SBATCH --job-name=medtl
#SBATCH --nodes=2
#SBATCH --ntasks-per-node=4
#SBATCH --gpus-per-node=4
#SBATCH --cpus-per-task=12
#SBATCH --time=2-00:00:00
#SBATCH --partition=gpu
#SBATCH --account=proj1
#
# 2 node(s) x 4 GPU(s) = 8 JAX process(es), one per GPU.
# jax.distributed.initialize() reads the SLURM_* variables srun sets, so launch.train
# gets no --coordinator_address / --num_processes / --process_id.
# Written by `python -m launch.slurm`; submit with: sbatch <this file>
set -euo pipefail
cd /shared/medtl-jax
srun --cpus-per-task=12 --kill-on-bad-exit=1 python -m launch.train \
--config configs/medmnist.py:dataset=retinamnist,model=resnet18 --workdir /shared/runs/retina \
--config.optimizer.lr=0.01
""".replace("\\\n", "")


def test_sbatch_script_leaves_out_unset_partition_and_account():
    directives = [line for line in sbatch_script(_slurm_args()).splitlines() if line.startswith("#SBATCH")]
    assert directives == ["#SBATCH --job-name=medtl", "#SBATCH --nodes=2", "#SBATCH --ntasks-per-node=4",
                          "#SBATCH --gpus-per-node=4", "#SBATCH --cpus-per-task=8", "#SBATCH --time=24:00:00"]


def test_generated_script_runs_under_bash_with_overrides_intact(tmp_path):
    overrides = ("--config.data.note=two words: here", "--config.data.root=/mnt/a b")
    repo = tmp_path / "my repo"
    repo.mkdir()
    script = tmp_path / "job.sbatch"
    script.write_text(sbatch_script(_slurm_args(repo_dir=str(repo), overrides=overrides)))
    _executable(tmp_path / "bin" / "srun", '#!/bin/sh\npwd\nfor a in "$@"; do printf "%s\\n" "$a"; done\n')
    out = subprocess.run(["bash", str(script)], capture_output=True, text=True, check=True,
                         env={**os.environ, "PATH": f"{tmp_path / 'bin'}:{os.environ['PATH']}"}).stdout
    assert out.splitlines() == [str(repo), "--cpus-per-task=8", "--kill-on-bad-exit=1", "python", "-m",
                                "launch.train", "--config", CONFIG, "--workdir", "/shared/runs/retina", *overrides]


@pytest.mark.parametrize("change, message", [
    ({"nodes": 0}, "--nodes must be a whole number >= 1, got 0"),
    ({"gpus_per_node": -2}, "--gpus_per_node must be a whole number >= 1, got -2"),
    ({"time": "24h"}, "--time '24h' is not a SLURM time limit"),
    ({"workdir": "runs/x"}, "must be on storage every host shares: an absolute path"),
    ({"workdir": "gs://b/x"}, "must be on storage every host shares: an absolute path"),
    ({"partition": "gpu a100"}, "--partition 'gpu a100' must be one word"),
    ({"overrides": ("lr=1",)}, "unrecognized argument 'lr=1'"),
])
def test_sbatch_script_rejects_bad_values(change, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace("*", r"\*")):
        sbatch_script(_slurm_args(**change))


SLURM_CLI = ["--gpus_per_node", "4", "--config", CONFIG, "--workdir", "/shared/runs/retina",
             "--repo_dir", str(REPO_ROOT)]


@pytest.mark.parametrize("nodes, message", [("0", "--nodes must be a whole number >= 1, got 0"),
                                            ("two", "argument --nodes: invalid int value: 'two'")])
def test_slurm_cli_bad_nodes(tmp_path, capsys, nodes, message):
    with pytest.raises(SystemExit) as exc:
        slurm.main(["--nodes", nodes, *SLURM_CLI, "--out", str(tmp_path / "job.sbatch")])
    assert exc.value.code == 2 and message in capsys.readouterr().err
    assert not (tmp_path / "job.sbatch").exists()


def test_slurm_cli_writes_the_script_and_prints_the_sbatch_command(tmp_path, capsys):
    out = tmp_path / "jobs" / "retina job.sbatch"
    slurm.main(["--nodes", "2", *SLURM_CLI, "--partition", "gpu", "--out", str(out), "--config.data.note=a b:c"])
    assert out.read_text() == sbatch_script(_slurm_args(repo_dir=str(REPO_ROOT), partition="gpu",
                                                        overrides=("--config.data.note=a b:c",)))
    assert os.listdir(out.parent) == [out.name]  # no temp file left beside it
    assert capsys.readouterr().out.splitlines() == [
        f"wrote {out}: 2 node(s) x 4 GPU(s), 8 JAX processes", f"submit with: sbatch '{out}'"]


def test_slurm_script_write_is_atomic(tmp_path, monkeypatch):
    out = tmp_path / "job.sbatch"
    out.write_text("#!/bin/bash\n# the previous, complete script\n")

    def failing_replace(src, dst):
        raise OSError("disk full")
    monkeypatch.setattr(os, "replace", failing_replace)
    with pytest.raises(OSError, match="disk full"):
        slurm.main(["--nodes", "2", *SLURM_CLI, "--out", str(out)])
    assert out.read_text() == "#!/bin/bash\n# the previous, complete script\n"
    assert os.listdir(tmp_path) == ["job.sbatch"]


def test_slurm_cli_rejects_a_missing_config(tmp_path, capsys):
    with pytest.raises(SystemExit):
        slurm.main(["--nodes", "1", "--gpus_per_node", "1", "--config", "configs/nope.py:x", "--workdir", "/s/r",
                    "--repo_dir", str(REPO_ROOT), "--out", str(tmp_path / "j.sbatch")])
    assert f"config file {REPO_ROOT / 'configs/nope.py'} not found" in capsys.readouterr().err


def test_submit_without_sbatch_is_a_clear_error(tmp_path, monkeypatch):
    (tmp_path / "empty").mkdir()
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    out = tmp_path / "job.sbatch"
    with pytest.raises(SystemExit, match="sbatch not found on PATH: run this on the cluster's login node"):
        slurm.main(["--nodes", "2", *SLURM_CLI, "--out", str(out), "--submit"])
    assert out.read_text().startswith("#!/bin/bash\n#SBATCH --job-name=medtl\n")  # kept for a manual submit


def test_submit_hands_the_script_to_sbatch(tmp_path, monkeypatch):
    log = tmp_path / "sbatch.log"
    _recorder(tmp_path / "bin", "sbatch", log)
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}:{os.environ['PATH']}")
    out = tmp_path / "job.sbatch"
    slurm.main(["--nodes", "2", *SLURM_CLI, "--out", str(out), "--submit"])
    assert _calls(log) == [[str(out)]]
