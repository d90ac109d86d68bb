"""Bad inputs to launch.predict end early with one `error: ...` line (exit 2, no traceback); CSV in/out
with the standard library; the config.model.init 'not found' message. No run is trained here: the CLI checks its
inputs and --out before it loads a run, so a missing --workdir shows which check came first."""

import errno
import os
import pathlib
import subprocess
import sys

import numpy as np
import PIL.Image
import pytest

from medtl_jax.runtime import cli_errors
from medtl_jax.inference.prediction import check_writable, csv_text
from medtl_jax.inference.prediction_inputs import list_inputs, read_csv_table
from medtl_jax.weights.init_source import check_init
from tests.helpers.paths import REPO_ROOT


def _cli(*args, env=None):
    clean = {k: v for k, v in os.environ.items() if k != cli_errors.DEBUG_ENV}
    return subprocess.run([sys.executable, "-m", "launch.predict", *args], cwd=REPO_ROOT, capture_output=True,
                          text=True, timeout=120, env={**clean, "JAX_PLATFORMS": "cpu", **(env or {})})


def _error_line(done) -> str:
    """The single `error:` line of a failed call (exit 2, no traceback, the debug hint at its end)."""
    output = done.stdout + done.stderr
    assert done.returncode == 2, output
    assert "Traceback" not in output
    lines = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and lines[0].endswith(cli_errors.HINT), output
    return lines[0]


def _image(path: pathlib.Path) -> pathlib.Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    PIL.Image.fromarray(np.zeros((32, 32), np.uint8)).save(path)
    return path


def test_out_under_a_file_fails_before_the_run_loads(tmp_path):
    _image(tmp_path / "in" / "a.png")
    (tmp_path / "file.txt").write_text("a file, not a folder")
    out = tmp_path / "file.txt" / "preds.csv"
    done = _cli("--workdir", str(tmp_path / "no_run"), "--input", str(tmp_path / "in"), "--out", str(out))
    line = _error_line(done)
    # Named the --out path, not the missing run: the check ran before the run was loaded.
    assert line.startswith(f"error: cannot write {out}: {tmp_path / 'file.txt'} is a file"), line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file.txt", "in"]


def test_empty_folder_is_an_error(tmp_path):
    (tmp_path / "empty").mkdir()
    done = _cli("--workdir", str(tmp_path / "no_run"), "--input", str(tmp_path / "empty"),
                "--out", str(tmp_path / "out" / "p.csv"))
    assert _error_line(done).startswith(f"error: no images found in {tmp_path / 'empty'} (looked for .png, .jpg")
    assert not (tmp_path / "out").exists()


def test_folder_of_non_images_names_what_it_skipped_and_debug_shows_the_traceback(tmp_path):
    (tmp_path / "docs" / "sub").mkdir(parents=True)
    (tmp_path / "docs" / "notes.txt").write_text("x")
    (tmp_path / "docs" / "sub" / "labels.csv").write_text("path\n")
    args = ("--workdir", str(tmp_path / "no_run"), "--input", str(tmp_path / "docs"), "--out", str(tmp_path / "p.csv"))
    line = _error_line(_cli(*args))
    assert f"no images found in {tmp_path / 'docs'}" in line
    assert "skipped 2 non-image files: notes.txt, sub/labels.csv" in line
    debug = _cli(*args, "--debug")
    assert debug.returncode != 0 and "Traceback" in debug.stderr
    assert "ValueError: no images found in" in debug.stderr


def test_check_writable_names_the_path(tmp_path):
    (tmp_path / "file.txt").write_text("x")
    with pytest.raises(NotADirectoryError, match=f"cannot write {tmp_path}/file.txt/a/b.csv: .*file.txt is a file"):
        check_writable(tmp_path / "file.txt" / "a" / "b.csv")
    with pytest.raises(IsADirectoryError, match=f"cannot write {tmp_path}: it is a folder"):
        check_writable(tmp_path)
    check_writable(tmp_path / "new" / "deeper" / "p.csv")  # creates the folders, leaves no probe file
    assert (tmp_path / "new" / "deeper").is_dir() and not any((tmp_path / "new" / "deeper").iterdir())


def test_user_errors_one_line_exit_2_and_debug(capsys, monkeypatch):
    monkeypatch.delenv(cli_errors.DEBUG_ENV, raising=False)
    with pytest.raises(SystemExit) as exit_info, cli_errors.user_errors():
        raise ValueError("bad value in x.csv\n  line 3: expected 2 fields")
    assert exit_info.value.code == 2
    assert capsys.readouterr().err == f"error: bad value in x.csv; line 3: expected 2 fields {cli_errors.HINT}\n"
    with pytest.raises(SystemExit), cli_errors.user_errors():
        raise OSError(errno.ENOSPC, "No space left on device", "/full/p.csv")
    assert "No space left on device: '/full/p.csv'" in capsys.readouterr().err
    with pytest.raises(KeyError), cli_errors.user_errors():  # a bug keeps its traceback
        raise KeyError("x")
    with pytest.raises(ValueError), cli_errors.user_errors(debug=True):
        raise ValueError("shown with its traceback")
    monkeypatch.setenv(cli_errors.DEBUG_ENV, "1")
    with pytest.raises(FileNotFoundError), cli_errors.user_errors():
        raise FileNotFoundError("shown with its traceback")


def test_csv_round_trip_keeps_text_and_empty_cells(tmp_path):
    text = csv_text([{"path": "a,b.png", "id": "007", "p": np.float64(0.1234567890123)}, {"path": "c.png", "id": ""}],
                    ["path", "id", "p"])
    assert text == 'path,id,p\n"a,b.png",007,0.1234567890123\nc.png,,\n'
    (tmp_path / "t.csv").write_text("\ufeff" + text + "\n")  # an Excel BOM and a trailing blank line
    assert read_csv_table(tmp_path / "t.csv") == (
        ["path", "id", "p"], [{"path": "a,b.png", "id": "007", "p": "0.1234567890123"},
                              {"path": "c.png", "id": "", "p": ""}])
    inputs = list_inputs(tmp_path / "t.csv")
    assert inputs.id_columns == ["id", "p"] and inputs.items[0].columns == {"id": "007", "p": "0.1234567890123"}


@pytest.mark.parametrize("content, reason", [
    (b"path,id\na.png,1,extra\n", "line 2 has 3 fields, the header has 2"),
    (b'path,id\n"a.png,1\n', "unexpected end of data"),
    (b"", "the file is empty"),
    (b"path,id\n\xff\xfe\x00a.png,1\n", "can't decode"),
])
def test_malformed_csv_names_the_file(tmp_path, content, reason):
    (tmp_path / "in.csv").write_bytes(content)
    with pytest.raises(ValueError, match=f"cannot read the CSV {tmp_path / 'in.csv'}: .*{reason}"):
        list_inputs(tmp_path / "in.csv")


def test_init_path_not_found_names_the_file_once(tmp_path):
    missing = tmp_path / "x.msgpack"
    with pytest.raises(ValueError) as err:
        check_init(str(missing), store_dir=str(tmp_path / "store"))
    assert str(err.value).count(str(missing)) == 1 and ".msgpack.msgpack" not in str(err.value)
    assert str(err.value).startswith(f"config.model.init: no such file {missing}.")
    with pytest.raises(ValueError, match=f"looked for {tmp_path / 'store' / 'mine.msgpack'}\\)") as err:
        check_init("mine.msgpack", store_dir=str(tmp_path / "store"))  # a store name given with its suffix
    assert ".msgpack.msgpack" not in str(err.value)
    (tmp_path / "store").mkdir()
    (tmp_path / "store" / "mine.msgpack").write_bytes(b"")
    check_init("mine.msgpack", store_dir=str(tmp_path / "store"))
    check_init(str(tmp_path / "store" / "mine"), store_dir=str(tmp_path / "elsewhere"))  # path without suffix
