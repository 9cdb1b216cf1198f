"""Notebooks in the repository carry no outputs, and an executed notebook never reaches a commit.

Every tracked notebook is stored exactly as the nbstripout filter (``harness.gitfilter``) writes it. In
a scratch repository with the filter installed the way ``scripts/install.sh`` installs it, a runbook
executed and saved with outputs, execution counts, the kernel's ``language_info`` and papermill's
metadata diffs as unchanged, stages as the committed notebook, and a real edit still shows.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from harness import gitfilter
from harness.params import declared_parameters

ROOT = Path(__file__).parents[1]
NOTEBOOKS = sorted([*ROOT.glob("runbooks/*.ipynb"), *ROOT.glob("notebooks/*.ipynb")])


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_every_notebook_is_stored_as_the_filter_writes_it(notebook):
    text = notebook.read_text(encoding="utf-8")
    assert gitfilter.clean_text(text) == text, f"python -m harness.gitfilter clean {notebook.relative_to(ROOT)}"
    nb = nbformat.reads(text, as_version=4)
    nbformat.validate(nb)
    assert all(not c.get("outputs") and c.get("execution_count") is None for c in nb.cells if c.cell_type == "code")
    assert nb.metadata.kernelspec == {"name": "python3", "display_name": gitfilter.KERNEL_DISPLAY_NAME,
                                      "language": "python"}


def test_the_attributes_name_the_filter_for_every_notebook():
    lines = (ROOT / ".gitattributes").read_text().splitlines()
    assert all(line in lines for line in gitfilter.ATTRIBUTES)


def _git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@example.invalid",
                           *args], capture_output=True, text=True, check=True, timeout=60).stdout


def _executed(source: Path) -> str:
    """The notebook as JupyterLab saves it after Run All (and papermill's metadata on top)."""
    nb = nbformat.read(source, as_version=4)
    nb.metadata["language_info"] = {"name": "python", "version": "3.11.7", "mimetype": "text/x-python",
                                    "codemirror_mode": {"name": "ipython", "version": 3}}
    nb.metadata["papermill"] = {"duration": 1.5, "parameters": {"phase": 3}}
    for n, cell in enumerate(c for c in nb.cells if c.cell_type == "code"):
        cell.execution_count = n + 1
        cell.outputs = [nbformat.v4.new_output("stream", name="stdout", text="manual run: runs/manual-x\n"),
                        nbformat.v4.new_output("display_data", data={"text/html": "<table></table>"})]
        cell.metadata["execution"] = {"iopub.status.idle": "2026-12-07T01:00:00Z"}
        cell.metadata["papermill"] = {"status": "completed"}
        cell.metadata["scrolled"] = True
    return nbformat.writes(nb) + "\n"


@pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")
@pytest.mark.integration
def test_a_runbook_run_and_saved_leaves_the_working_tree_clean(tmp_path):
    repo = tmp_path / "repo"
    (repo / "runbooks").mkdir(parents=True)
    shutil.copy(ROOT / ".gitattributes", repo / ".gitattributes")
    target = repo / "runbooks" / "00_validate_env.ipynb"
    shutil.copy(ROOT / "runbooks" / "00_validate_env.ipynb", target)
    _git(repo, "init", "-q")
    assert "notebook outputs are stripped" in gitfilter.install(repo, python=sys.executable)
    _git(repo, "add", "-A")
    _git(repo, "commit", "-q", "-m", "clean notebooks")

    target.write_text(_executed(target), encoding="utf-8")
    assert '"outputs": []' not in target.read_text()  # the file itself did change
    assert _git(repo, "diff") == ""  # through the filter it did not
    # git status trusts a changed file size before any filter (nbstripout's known phantom "M"); what it
    # would stage is the committed notebook. JupyterLab saves are stripped before they reach the disk
    # (harness.lab), so there a save leaves even the size unchanged (tests/test_lab.py).
    _git(repo, "add", "-A")
    assert _git(repo, "status", "--porcelain") == "" and _git(repo, "diff", "--cached") == ""

    # a real edit is still one, and what is staged carries no output
    nb = json.loads(target.read_text())
    nb["cells"][1]["source"].append("\n# a new line")
    target.write_text(json.dumps(nb, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    assert _git(repo, "status", "--porcelain").strip() == "M runbooks/00_validate_env.ipynb"
    _git(repo, "add", "-A")
    staged = json.loads(_git(repo, "show", ":runbooks/00_validate_env.ipynb"))
    assert all(c.get("outputs", []) == [] and c.get("execution_count") is None for c in staged["cells"])
    assert "language_info" not in staged["metadata"] and "papermill" not in staged["metadata"]
    assert "".join(staged["cells"][1]["source"]).endswith("\n# a new line")


def test_the_filter_refuses_to_install_outside_a_repository_or_without_the_attributes(tmp_path):
    with pytest.raises(RuntimeError, match="not a git work tree"):
        gitfilter.install(tmp_path, python=sys.executable)
    _git(tmp_path, "init", "-q")
    with pytest.raises(RuntimeError, match=r"lacks \*\.ipynb filter=nbstripout"):
        gitfilter.install(tmp_path, python=sys.executable)


def test_the_load_runbook_lists_every_scenario_where_they_are_chosen():
    from harness.load.scenarios import SCENARIOS

    help_text = declared_parameters(ROOT / "runbooks" / "05_load.ipynb")["scenarios"].help
    assert [name for name in SCENARIOS if name not in help_text] == []
