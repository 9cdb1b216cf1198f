"""Runbook parameters: typed from the parameters cell, validated before any kernel starts."""

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_notebook

from harness.errors import ParameterError
from harness.params import declared_parameters, parse_assignments, resolve
from harness.sequence import load_sequence


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
