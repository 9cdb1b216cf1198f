"""Notebooks are committed without outputs: nbstripout as a git filter, set up by ``scripts/install.sh``.

``.gitattributes`` (tracked) sends every ``*.ipynb`` through the ``nbstripout`` filter and diff driver;
``install`` defines them in the repository's git config, with this venv's Python. Running a runbook in
JupyterLab then leaves ``git status`` clean: outputs, execution counts, the kernel's ``language_info``
and papermill's metadata never reach the index, and cell ids are kept (JupyterLab keeps them too, so
a saved notebook has nothing to diff). The tracked notebooks are stored exactly as the filter writes
them (``tests/test_notebook_hygiene.py`` checks it), so a clean checkout is clean under the filter.

    python -m harness.gitfilter install [--python PATH]   # in the checkout: what scripts/install.sh runs
    python -m harness.gitfilter check [NOTEBOOK ...]       # exit 1 naming notebooks the filter would change
    python -m harness.gitfilter clean NOTEBOOK ...         # rewrite them as the filter would store them
"""

from __future__ import annotations

import argparse
import shlex
import subprocess
import sys
from pathlib import Path

# nbstripout's own defaults (execution metadata, collapsed/scrolled, signatures) plus what a kernel or
# papermill writes that is not the notebook's content
EXTRA_KEYS = ("metadata.language_info", "metadata.papermill", "cell.metadata.papermill")
DEFAULT_KEYS = ("metadata.signature", "metadata.widgets", "cell.metadata.collapsed", "cell.metadata.ExecuteTime",
                "cell.metadata.execution", "cell.metadata.heading_collapsed", "cell.metadata.hidden",
                "cell.metadata.scrolled")
ATTRIBUTES = ("*.ipynb filter=nbstripout", "*.ipynb diff=ipynb")
KERNEL_DISPLAY_NAME = "Python 3 (ipykernel)"  # what ipykernel's kernelspec says, and so what Lab saves


def clean_text(text: str) -> str:
    """A notebook's JSON as the filter stores it."""
    import nbformat
    from nbstripout import strip_output

    nb = nbformat.reads(text, as_version=nbformat.NO_CONVERT)
    strip_output(nb, keep_output=False, keep_count=False, keep_id=True, extra_keys=[*DEFAULT_KEYS, *EXTRA_KEYS])
    return nbformat.writes(nb) + "\n"


def git_config(repo: Path, python: str) -> list[list[str]]:
    """The ``git config`` settings of the filter and the diff driver."""
    command = f"{shlex.quote(python)} -m nbstripout --keep-id"
    return [["filter.nbstripout.clean", command], ["filter.nbstripout.smudge", "cat"],
            ["filter.nbstripout.required", "true"], ["filter.nbstripout.extrakeys", " ".join(EXTRA_KEYS)],
            ["diff.ipynb.textconv", f"{command} -t"]]


def install(repo: Path | None = None, python: str | None = None) -> str:
    """Define the filter in the git config of ``repo`` (default: the current directory, as
    ``scripts/install.sh`` runs it from the checkout); ``.gitattributes`` must name it. A sentence saying
    what was done; ``RuntimeError`` outside a git work tree or without the attributes."""
    repo = Path(repo or Path.cwd())
    inside = subprocess.run(["git", "-C", str(repo), "rev-parse", "--is-inside-work-tree"],
                            capture_output=True, text=True)
    if inside.returncode != 0 or inside.stdout.strip() != "true":
        raise RuntimeError(f"{repo} is not a git work tree: no filter to install")
    attributes = repo / ".gitattributes"
    present = attributes.read_text().splitlines() if attributes.is_file() else []
    missing = [line for line in ATTRIBUTES if line not in present]
    if missing:
        raise RuntimeError(f"{attributes} lacks {', '.join(missing)}")
    for key, value in git_config(repo, python or sys.executable):
        subprocess.run(["git", "-C", str(repo), "config", "--local", key, value], check=True)
    return f"notebook outputs are stripped on commit (nbstripout filter, {python or sys.executable})"


def tracked_notebooks(repo: Path | None = None) -> list[Path]:
    from suite.settings import project_root

    repo = Path(repo or project_root())
    listed = subprocess.run(["git", "-C", str(repo), "ls-files", "*.ipynb"], capture_output=True, text=True)
    if listed.returncode == 0 and listed.stdout.strip():
        return [repo / line for line in listed.stdout.splitlines()]
    return sorted([*repo.glob("runbooks/*.ipynb"), *repo.glob("notebooks/*.ipynb")])


def unclean(paths: list[Path]) -> list[Path]:
    """The notebooks the filter would change."""
    return [p for p in paths if clean_text(p.read_text(encoding="utf-8")) != p.read_text(encoding="utf-8")]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m harness.gitfilter", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    inst = sub.add_parser("install", help="define the nbstripout filter in this repository's git config")
    inst.add_argument("--python", help="the Python that runs nbstripout (default: this one)")
    for name, text in (("check", "exit 1 naming notebooks the filter would change"),
                       ("clean", "rewrite notebooks as the filter stores them")):
        p = sub.add_parser(name, help=text)
        p.add_argument("notebooks", nargs="*", type=Path, help="default: every tracked notebook")
    args = parser.parse_args(argv)
    if args.command == "install":
        try:
            print(install(python=args.python))
        except (RuntimeError, subprocess.CalledProcessError, OSError) as exc:
            print(f"nbstripout filter not installed: {exc}", file=sys.stderr)
            return 1
        return 0
    paths = args.notebooks or tracked_notebooks()
    dirty = unclean(paths)
    if args.command == "clean":
        for path in dirty:
            path.write_text(clean_text(path.read_text(encoding="utf-8")), encoding="utf-8")
            print(f"cleaned {path}")
        return 0
    for path in dirty:
        print(f"{path}: carries outputs or metadata the filter strips "
              f"(python -m harness.gitfilter clean {path})", file=sys.stderr)
    return 1 if dirty else 0


if __name__ == "__main__":
    sys.exit(main())
