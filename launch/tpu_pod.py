"""Train one run on every worker of a Cloud TPU VM slice (a pod), driven from your own machine by gcloud.

    python -m launch.tpu_pod --tpu my-v4-32 --zone us-central2-b --project my-project \
        --workdir gs://my-bucket/runs/retina \
        --config configs/medmnist.py:dataset=retinamnist,model=resnet18 --config.optimizer.lr=0.01

Steps, each one gcloud command addressed to all workers (--worker=all):
  copy     the files `git ls-files` lists (tracked, plus untracked ones that .gitignore does not exclude;
           so runs/, .git and build outputs stay home), packed here into one tarball, scp'd to every worker
           and unpacked into --repo_dir;
  install  `pip install -e .` together with jax[tpu] pinned to the jax version of setup.cfg;
  train    the same `python -m launch.train ...` on every worker at once. The TPU runtime joins the
           workers by itself (and jax.distributed.initialize() without arguments reads coordinator,
           process count and id from the TPU VM metadata), so no multi-process flags are passed.
Config overrides are written as for launch.train (--config.a.b=value) and passed through unchanged.
Every worker writes checkpoints into the same run folder, so --workdir must be a gs:// path or an
absolute path on storage all workers mount (NFS / Filestore). The workers' Python (--python) must be
3.11 or newer; on images whose system Python is older or pip-managed, point --python at a venv.
--dry_run prints the commands (shell-quoted) and runs nothing.
"""

from __future__ import annotations

import argparse
import configparser
import dataclasses
import os
import pathlib
import re
import shlex
import shutil
import subprocess
import sys
import tarfile
import tempfile

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
REMOTE_TARBALL = "/tmp/medtl-jax-code.tar.gz"
STEPS = ("copy", "install", "train")
_GCLOUD_TPU_VM = ["gcloud", "compute", "tpus", "tpu-vm"]
_OVERRIDE = re.compile(r"--config(\.\w+)+=.*", re.DOTALL)


@dataclasses.dataclass(frozen=True)
class PodArgs:
    """What the pod commands are built from; strings are kept exactly as the user typed them."""
    tpu: str
    zone: str
    config: str
    workdir: str
    jax_version: str
    code_tarball: str
    overrides: tuple[str, ...] = ()
    project: str | None = None
    repo_dir: str = "~/medtl-jax"
    python: str = "python3"
    background: bool = False
    log_file: str = "train.log"


def check_override(arg: str) -> str:
    """Returns `arg` if it is a `--config.a.b=value` override; else ValueError (catches a lost `--config.`
    prefix or a space-separated value before any remote machine is touched)."""
    if not _OVERRIDE.fullmatch(arg):
        raise ValueError(f"unrecognized argument {arg!r}: config overrides are written --config.<group>.<field>=value")
    return arg


def check_shared_workdir(workdir: str, allow_gcs: bool) -> str:
    """Returns `workdir` if every host can reach it (absolute path, or gs:// where `allow_gcs`); a relative
    path would be a different, host-local folder on each machine, so checkpoints would not be shared."""
    if (allow_gcs and workdir.startswith("gs://")) or workdir.startswith("/"):
        return workdir
    where = "a gs:// bucket path or an absolute path" if allow_gcs else "an absolute path"
    raise ValueError(f"--workdir {workdir!r} must be on storage every host shares: {where} "
                     "on a shared (NFS) file system")


def train_argv(config: str, workdir: str, overrides=(), python: str = "python") -> list[str]:
    """The `python -m launch.train` command line of one run: the same on every host/process (SPMD)."""
    return [python, "-m", "launch.train", "--config", config, "--workdir", workdir,
            *(check_override(o) for o in overrides)]


def jax_version(setup_cfg: str | os.PathLike = REPO_ROOT / "setup.cfg") -> str:
    """The `jax==X` pin of setup.cfg's install_requires, so the TPU wheels match the tested jax."""
    parser = configparser.ConfigParser()
    if not parser.read(setup_cfg):
        raise FileNotFoundError(f"{setup_cfg} not found")
    requires = parser.get("options", "install_requires", fallback="")
    for line in requires.splitlines():
        m = re.fullmatch(r"jax\s*==\s*([\w.+-]+)", line.strip())
        if m:
            return m.group(1)
    raise ValueError(f"{setup_cfg} pins no jax version (expected a line 'jax==X' in [options] install_requires)")


def remote_path(path: str) -> str:
    """Shell-quotes a path for the worker's shell, leaving a leading `~` unquoted so it still expands."""
    if path == "~":
        return path
    if path.startswith("~/"):
        return "~/" + shlex.quote(path[2:])
    return shlex.quote(path)


def pod_commands(args: PodArgs) -> list[list[str]]:
    """The copy, install and train commands (argv lists, run here) for `args`; pure, so tests can pin them."""
    targets = _targets(args)
    repo, python = remote_path(args.repo_dir), remote_path(args.python)
    copy = [*_GCLOUD_TPU_VM, "scp", args.code_tarball, f"{args.tpu}:{REMOTE_TARBALL}", *targets]
    install = " && ".join([
        f"mkdir -p {repo}",
        f"tar -xzf {REMOTE_TARBALL} -C {repo}",
        f"cd {repo}",
        f"{python} " + shlex.join(["-m", "pip", "install", "-e", ".", f"jax[tpu]=={args.jax_version}"]),
    ])
    train = f"{python} " + shlex.join(train_argv(args.config, args.workdir, args.overrides)[1:])
    if args.background:  # survives the ssh session; output goes to <repo_dir>/<log_file> on each worker
        train = f"nohup {train} > {shlex.quote(args.log_file)} 2>&1 < /dev/null &"
    ssh = [*_GCLOUD_TPU_VM, "ssh", args.tpu, *targets]
    return [copy, [*ssh, f"--command={install}"], [*ssh, f"--command=cd {repo} && {train}"]]


def _targets(args: PodArgs, worker: str = "all") -> list[str]:
    return [f"--worker={worker}", f"--zone={args.zone}"] + ([f"--project={args.project}"] if args.project else [])


def git_files(repo: str | os.PathLike) -> list[str]:
    """Files of `repo` worth shipping: tracked plus untracked-not-ignored, as `git ls-files` lists them."""
    try:
        out = subprocess.run(["git", "-C", str(repo), "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                             capture_output=True, check=True).stdout
    except FileNotFoundError:
        raise RuntimeError("git not found on PATH: it lists the files to copy to the workers") from None
    except subprocess.CalledProcessError as e:
        raise RuntimeError(f"`git ls-files` failed in {repo}: {e.stderr.decode(errors='replace').strip()}") from None
    names = sorted({n for n in out.decode().split("\0") if n})
    return [n for n in names if os.path.lexists(os.path.join(repo, n))]  # deleted-but-tracked files drop out


def pack_code(repo: str | os.PathLike, files: list[str], dest: str | os.PathLike) -> pathlib.Path:
    """Writes `files` (relative to `repo`) into the gzipped tarball `dest`, whole or not at all."""
    dest = pathlib.Path(dest)
    tmp = dest.with_name(f".{dest.name}.tmp")
    try:
        with tarfile.open(tmp, "w:gz") as tar:
            for name in files:
                tar.add(os.path.join(repo, name), arcname=name, recursive=False)
        os.replace(tmp, dest)
    finally:
        if tmp.exists():
            tmp.unlink()
    return dest


def parse_args(argv: list[str]) -> tuple[PodArgs, bool]:
    """Command line -> (PodArgs, dry_run); bad values stop with an argparse error naming the flag."""
    p = argparse.ArgumentParser(prog="python -m launch.tpu_pod", allow_abbrev=False,
                                description=__doc__.split("\n\n")[0],
                                epilog="Any --config.<group>.<field>=value is passed on to launch.train.")
    p.add_argument("--tpu", required=True, help="TPU VM name (as in `gcloud compute tpus tpu-vm list`).")
    p.add_argument("--zone", required=True, help="Zone of the TPU VM, e.g. us-central2-b.")
    p.add_argument("--project", help="Google Cloud project (default: gcloud's configured project).")
    p.add_argument("--config", required=True, help="Config file relative to the repo root, optionally 'path.py:args'.")
    p.add_argument("--workdir", required=True, help="Run folder shared by all workers: gs://bucket/... or NFS path.")
    p.add_argument("--repo_dir", default="~/medtl-jax",
                   help="Where the code goes on each worker; quote a leading ~ so the worker expands it.")
    p.add_argument("--python", default="python3",
                   help="Python 3.11+ on the workers, e.g. '~/venv/bin/python' (quoted: ~ is the worker's home).")
    p.add_argument("--background", action="store_true",
                   help="Detach training (nohup) so it outlives this ssh session; log in <repo_dir>/train.log.")
    p.add_argument("--dry_run", action="store_true", help="Print the commands, run nothing.")
    ns, extra = p.parse_known_args(argv)
    try:
        overrides = tuple(check_override(a) for a in extra)
        check_shared_workdir(ns.workdir, allow_gcs=True)
        version = jax_version()
    except (ValueError, FileNotFoundError) as e:
        p.error(str(e))
    args = PodArgs(tpu=ns.tpu, zone=ns.zone, project=ns.project, config=ns.config, workdir=ns.workdir,
                   overrides=overrides, repo_dir=ns.repo_dir, python=ns.python, background=ns.background,
                   jax_version=version, code_tarball=os.path.join(tempfile.gettempdir(), "medtl-jax-code.tar.gz"))
    return args, ns.dry_run


def main(argv: list[str] | None = None) -> None:
    """Prints (--dry_run) or runs the copy / install / train steps, stopping at the first that fails."""
    args, dry_run = parse_args(sys.argv[1:] if argv is None else argv)
    if not dry_run and shutil.which("gcloud") is None:
        sys.exit("error: gcloud not found on PATH. Install the Google Cloud CLI "
                 "(https://cloud.google.com/sdk/docs/install), or add --dry_run to print the commands only.")
    try:
        files = git_files(REPO_ROOT)
    except RuntimeError as e:
        sys.exit(f"error: {e}")
    config_file = args.config.partition(":")[0]
    if os.path.normpath(config_file) not in files:
        sys.exit(f"error: config file {config_file!r} is not among the files copied to the workers "
                 f"(paths relative to {REPO_ROOT}, as `git ls-files` lists them)")
    commands = pod_commands(args)
    if dry_run:
        print(f"# pack {len(files)} files of {REPO_ROOT} (git ls-files) into {args.code_tarball}")
        for cmd in commands:
            print(shlex.join(cmd))
        return
    pack_code(REPO_ROOT, files, args.code_tarball)
    for step, cmd in zip(STEPS, commands):
        print(f"[{step}] {shlex.join(cmd)}", flush=True)
        try:
            subprocess.run(cmd, check=True)
        except subprocess.CalledProcessError as e:
            sys.exit(f"error: the {step} step failed (exit code {e.returncode}); later steps were not run")
    if args.background:
        log = f"{remote_path(args.repo_dir)}/{shlex.quote(args.log_file)}"
        follow = [*_GCLOUD_TPU_VM, "ssh", args.tpu, *_targets(args, worker="0"), f"--command=tail -f {log}"]
        print(f"training runs in the background; follow worker 0 with: {shlex.join(follow)}")


if __name__ == "__main__":
    main()
