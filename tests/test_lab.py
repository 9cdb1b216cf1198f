"""JupyterLab's saves of the project's notebooks (``harness.lab``), through jupyter_server's own contents
manager: the file in the repository stays byte-identical to the committed one (``git status`` clean, no
git filter needed), and a runbook's outputs land in the manual run it wrote into, secrets redacted."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import nbformat
import pytest

from harness import manual
from harness.lab import make_pre_save, run_of, stripped

ROOT = Path(__file__).parents[1]
SECRET = "sk-not-for-the-run-folder-123"


@pytest.fixture
def project(tmp_path) -> Path:
    """A checkout: runbooks/ and notebooks/ with the real notebooks, committed."""
    root = tmp_path / "project"
    for folder, name in (("runbooks", "05_load.ipynb"), ("notebooks", "latency_explorer.ipynb")):
        (root / folder).mkdir(parents=True)
        shutil.copy(ROOT / folder / name, root / folder / name)
    (root / "elsewhere").mkdir()
    shutil.copy(ROOT / ".gitignore", root / ".gitignore")  # .ipynb_checkpoints/, as in the project
    git = ["git", "-C", str(root), "-c", "user.name=t", "-c", "user.email=t@example.invalid"]
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "add", "-A"], check=True)
    subprocess.run([*git, "commit", "-q", "-m", "notebooks"], check=True)
    return root


def executed(source: Path, run: Path | None, secret: bool = False) -> dict:
    """The notebook model JupyterLab sends after Run All: outputs, counts, the kernel's language_info."""
    nb = json.loads(source.read_text())
    nb["metadata"]["language_info"] = {"name": "python", "version": "3.11.7"}
    for n, cell in enumerate(c for c in nb["cells"] if c["cell_type"] == "code"):
        cell["execution_count"] = n + 1
        text = f"manual run: {run}  (joined the newest manual run)\n" if run and n == 1 else f"cell {n}\n"
        cell["outputs"] = [{"output_type": "stream", "name": "stdout", "text": [text]},
                           {"output_type": "display_data", "metadata": {},
                            "data": {"text/html": ["<table class='harness-results'></table>"]}}]
        if secret and "parameters" in cell["metadata"].get("tags", []):
            cell["source"] = ["".join(cell["source"]) + f'\napi_key: str = "{SECRET}"  # typed by hand']
    return nb


def manager(root: Path):
    from jupyter_server.services.contents.filemanager import FileContentsManager

    cm = FileContentsManager(root_dir=str(root))
    cm.register_pre_save_hook(make_pre_save([root / "runbooks", root / "notebooks"]))
    return cm


def git_status(root: Path) -> str:
    return subprocess.run(["git", "-C", str(root), "status", "--porcelain"], capture_output=True, text=True,
                          check=True).stdout


def test_a_runbook_saved_after_running_stays_committed_and_its_outputs_go_to_the_run(project, tmp_path):
    run = manual.open_run(tmp_path / "runs" / "manual-20261207-100000")
    source = project / "runbooks" / "05_load.ipynb"
    committed = source.read_bytes()
    model = executed(source, run.path, secret=True)
    manager(project).save({"type": "notebook", "format": "json", "content": model}, "runbooks/05_load.ipynb")

    # the repository's file: outputs gone, but the cell the user edited (the secret line) is an edit
    saved = nbformat.read(source, as_version=4)
    assert all(not c.outputs and c.execution_count is None for c in saved.cells if c.cell_type == "code")
    assert "language_info" not in saved.metadata
    # the run keeps the executed notebook and its HTML, the step points at them, the secret is not there
    copy = run.notebooks / "05_load.ipynb"
    kept = nbformat.read(copy, as_version=4)
    assert any(o.get("output_type") == "display_data" for c in kept.cells for o in c.get("outputs", []))
    assert SECRET not in copy.read_text() and "[redacted]" in copy.read_text()
    assert SECRET not in (run.notebooks / "05_load.html").read_text()  # code-free, and the value is nowhere
    step = json.loads(run.steps_file.read_text())[0]
    assert step == {"notebook": "05_load.ipynb", "output": "notebooks/05_load.ipynb", "html": "notebooks/05_load.html"}

    # saved again without the edit: byte-identical to the commit, so git status is clean (no filter here)
    source.write_bytes(committed)
    manager(project).save({"type": "notebook", "format": "json", "content": executed(source, run.path)},
                          "runbooks/05_load.ipynb")
    assert source.read_bytes() == committed and git_status(project) == ""


def test_exploration_notebooks_are_stripped_without_a_copy_and_other_folders_are_left_alone(project, tmp_path):
    explorer = project / "notebooks" / "latency_explorer.ipynb"
    committed = explorer.read_bytes()
    cm = manager(project)
    cm.save({"type": "notebook", "format": "json", "content": executed(explorer, None)},
            "notebooks/latency_explorer.ipynb")
    assert explorer.read_bytes() == committed and git_status(project) == ""
    cm.save({"type": "notebook", "format": "json", "content": executed(explorer, None)}, "elsewhere/mine.ipynb")
    mine = nbformat.read(project / "elsewhere" / "mine.ipynb", as_version=4)
    assert any(c.get("outputs") for c in mine.cells if c.cell_type == "code")  # a user's own copy keeps them


def test_a_runbook_that_never_opened_a_manual_run_is_only_stripped(project):
    source = project / "runbooks" / "05_load.ipynb"
    model = executed(source, None)
    assert run_of(model) is None
    manager(project).save({"type": "notebook", "format": "json", "content": model}, "runbooks/05_load.ipynb")
    assert nbformat.read(source, as_version=4) == nbformat.reads(json.dumps(stripped(model)), as_version=4)
