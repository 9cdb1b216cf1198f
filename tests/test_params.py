"""Runbook parameters: typed from the parameters cell, validated before any kernel starts; sequence
files that name a notebook by a path are refused before anything starts."""

import os
import subprocess
import sys

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_notebook

from harness.errors import ParameterError, SequenceError
from harness.params import declared_parameters, parse_assignments, resolve
from harness.sequence import load_sequence
from suite.testing import free_port_offset


def _notebook(tmp_path, name, source):
    cell = new_code_cell(source)
    cell.metadata["tags"] = ["parameters"]
    path = tmp_path / name
    nb = new_notebook(cells=[cell])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, path)
    return path


def test_parse_assignments():
    assert parse_assignments(["phase=2", "title=a=b"]) == {"phase": "2", "title": "a=b"}
    with pytest.raises(ParameterError, match="NAME=VALUE"):
        parse_assignments(["phase"])


def test_values_are_converted_to_each_declared_type(tmp_path):
    a = _notebook(tmp_path, "a.ipynb", 'run_dir: str = ""\nphase: int = 1\nratio: float = 0.5\nkeep: bool = False')
    b = _notebook(tmp_path, "b.ipynb", 'run_dir: str = ""\nnames: list[str] = []\nphase: int = 1')
    typed = resolve([a, b], {"phase": "3", "ratio": "0.25", "keep": "yes", "names": "x, y"})
    assert typed["a.ipynb"] == {"phase": 3, "ratio": 0.25, "keep": True}
    assert typed["b.ipynb"] == {"names": ["x", "y"], "phase": 3}


@pytest.mark.parametrize("raw,match", [
    ({"phase": "two"}, "'phase' of a.ipynb expects int"),
    ({"keep": "maybe"}, "'keep' of a.ipynb expects bool"),
    ({"nope": "1"}, "unknown parameter 'nope'"),
    ({"run_dir": "/tmp"}, "set by `harness run`"),
])
def test_bad_parameters_are_refused_with_their_name(tmp_path, raw, match):
    a = _notebook(tmp_path, "a.ipynb", 'run_dir: str = ""\nphase: int = 1\nkeep: bool = False')
    with pytest.raises(ParameterError, match=match) as info:
        resolve([a], raw)
    assert info.value.parameter == next(iter(raw))


def test_untyped_parameter_is_refused(tmp_path):
    a = _notebook(tmp_path, "a.ipynb", "phase = 1")
    with pytest.raises(ParameterError, match="no type annotation"):
        declared_parameters(a)


def test_a_line_papermill_would_skip_is_refused(tmp_path):
    """Papermill drops a parameter line with a second '=' (here in its comment) without an error."""
    a = _notebook(tmp_path, "a.ipynb", 'phase: int = 1\nmode: str = ""  # empty = all')
    with pytest.raises(ParameterError, match="not understood by papermill") as info:
        declared_parameters(a)
    assert info.value.parameter == "mode"


def test_shipped_runbooks_declare_typed_parameters():
    seq = load_sequence()
    for nb in seq.notebook_paths():
        params = declared_parameters(nb)
        assert {"run_dir", "run_id"} <= set(params), nb.name
    typed = resolve(seq.notebook_paths(), {"phase": "1"})
    assert typed["00_validate_env.ipynb"]["phase"] == 1


def test_secret_parameters_by_whole_name_part_or_by_mark(tmp_path):
    a = _notebook(tmp_path, "a.ipynb", 'max_tokens: int = 0\nhf_token: str = ""\n'
                                       'note: str = ""  # vault login (secret)\nkeys_dir: str = ""')
    assert {p.name: p.secret for p in declared_parameters(a).values()} == {
        "max_tokens": False, "hf_token": True, "note": True, "keys_dir": False}


def _sequence_naming(tmp_path, entry):
    """``book/sequence.yaml`` naming ``entry`` (a notebook that exists at that path) after ``a.ipynb``."""
    book, sub = tmp_path / "book", tmp_path / "book" / "sub"
    sub.mkdir(parents=True)
    for folder in (tmp_path, book, sub):
        _notebook(folder, "x.ipynb", 'run_dir: str = ""\nrun_id: str = ""\nphase: int = 1')
    _notebook(book, "a.ipynb", 'run_dir: str = ""\nrun_id: str = ""\nphase: int = 1')
    entry = entry.replace("ROOT", str(tmp_path))
    (book / "sequence.yaml").write_text(f"name: paths\nrunbooks:\n  - a.ipynb\n  - {entry}\n")
    return book / "sequence.yaml"


@pytest.mark.parametrize("entry", ["ROOT/book/x.ipynb", "ROOT/x.ipynb", "sub/x.ipynb", "../x.ipynb", "./x.ipynb",
                                   "{notebook: sub/x.ipynb}", "{notebook: ../x.ipynb, report: true}", ".."])
def test_a_sequence_naming_a_notebook_by_path_is_refused(tmp_path, entry):
    """The executed copy goes to runs/<id>/notebooks/<entry> and parameters are keyed by file name: an
    absolute path would be written over its own source, and any path crashed the run (KeyError)."""
    seq = _sequence_naming(tmp_path, entry)
    with pytest.raises(SequenceError, match="not a plain file name: name notebooks by file name") as info:
        load_sequence(seq)
    assert "put the sequence file beside them" in str(info.value) and info.value.notebook != "a.ipynb"


@pytest.mark.parametrize("entry", ["{report: true}", "{notebook: 3}", "[a.ipynb]", "7"])
def test_a_sequence_entry_without_a_notebook_name_is_refused(tmp_path, entry):
    seq = _sequence_naming(tmp_path, entry)
    with pytest.raises(SequenceError, match="neither a notebook file name nor a mapping"):
        load_sequence(seq)


def test_harness_run_refuses_a_notebook_path_with_exit_2_and_leaves_the_source_alone(tmp_path):
    seq = _sequence_naming(tmp_path, "ROOT/book/x.ipynb")
    source = tmp_path / "book" / "x.ipynb"
    before = source.read_bytes(), source.stat().st_mtime_ns
    env = dict(os.environ, SUITE_DATA_DIR=str(tmp_path / "data"), SUITE_PORT_OFFSET=str(free_port_offset()))
    proc = subprocess.run([sys.executable, "-m", "harness.cli", "run", str(seq), "--runs-dir",
                           str(tmp_path / "runs")], capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr
    assert proc.stderr.startswith("error: sequence.yaml names") and "name notebooks by file name" in proc.stderr
    assert (source.read_bytes(), source.stat().st_mtime_ns) == before
    assert not (tmp_path / "runs").exists()  # refused before a run directory was made
