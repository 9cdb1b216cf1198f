"""JupyterLab and the project's notebooks: a Jupyter server extension that saves them clean.

Run by hand in JupyterLab, a runbook's outputs are its evidence, and the notebook in ``runbooks/`` is a
tracked file. Saving one (autosave included) used to write the outputs into the repository: ``git status``
showed it modified and the next ``env.git`` check warned. With this extension, every save of a notebook in
the project's ``runbooks/`` or ``notebooks/``:

1. keeps a runbook's executed copy in the manual run it wrote into (the ``manual run: PATH`` line that
   ``Runbook.open`` prints): ``runs/<id>/notebooks/NAME.ipynb`` and its code-free HTML, with the values of
   secret parameters redacted, and points the run's step at them, as ``harness run`` does, so the report
   links them;
2. writes the notebook itself as the git filter would commit it (``harness.gitfilter``): no outputs, no
   execution counts, no kernel metadata. The file stays byte-identical to the committed one, so even
   ``git status`` (which trusts a changed size before any filter) stays clean.

The browser keeps showing the outputs until the notebook is reopened; they are in the run. Other folders
(a copy saved elsewhere) are left alone. The extension is enabled by the package's
``etc/jupyter/jupyter_server_config.d/harness.lab.json`` (pyproject's data-files).
"""

from __future__ import annotations

import copy
import logging
import re
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

MANUAL_LINE = re.compile(r"^manual run: (?P<path>/.+?)(?:  \(.*)?$", re.MULTILINE)
FOLDERS = ("runbooks", "notebooks")


def _jupyter_server_extension_points() -> list[dict[str, str]]:
    return [{"module": "harness.lab"}]


def _load_jupyter_server_extension(serverapp) -> None:
    from suite.settings import project_root

    folders = [project_root() / name for name in FOLDERS]
    serverapp.contents_manager.register_pre_save_hook(make_pre_save(folders))
    serverapp.log.info("harness.lab: notebooks in %s are saved without outputs; runbook outputs are kept in "
                       "their manual run under runs/", ", ".join(map(str, folders)))


def make_pre_save(folders: Iterable[Path]) -> Callable[..., None]:
    """The contents manager's pre-save hook for notebooks directly in ``folders``."""
    watched = {Path(f).resolve() for f in folders}

    def pre_save(model: dict[str, Any], path: str, contents_manager: Any, **kwargs: Any) -> None:
        if model.get("type") != "notebook" or not isinstance(model.get("content"), dict):
            return
        target = (Path(contents_manager.root_dir) / path.lstrip("/")).resolve()
        if target.parent not in watched:
            return
        if target.parent.name == "runbooks":
            try:
                keep_executed(model["content"], target)
            except Exception:  # the evidence copy must never stop the user's save
                log.exception("harness.lab: could not keep the executed copy of %s", target.name)
        model["content"] = stripped(model["content"])

    return pre_save


def stripped(content: dict[str, Any]) -> dict[str, Any]:
    """The notebook as the git filter commits it."""
    import nbformat

    from harness.gitfilter import clean_text

    return nbformat.reads(clean_text(nbformat.writes(nbformat.from_dict(copy.deepcopy(content)))),
                          as_version=nbformat.NO_CONVERT)


def run_of(content: dict[str, Any]) -> Path | None:
    """The manual run an executed runbook wrote into, from the line ``Runbook.open`` printed."""
    for cell in content.get("cells", []):
        for out in cell.get("outputs", []) or []:
            if out.get("output_type") != "stream":
                continue
            text = out.get("text", "")
            match = MANUAL_LINE.search("".join(text) if isinstance(text, list) else text)
            if match:
                return Path(match.group("path"))
    return None


def keep_executed(content: dict[str, Any], source: Path) -> Path | None:
    """Write the executed runbook into its manual run (``notebooks/NAME.ipynb`` + ``.html``), values of
    its secret parameters redacted; the copy's path, or None when it ran in no manual run (never
    executed, or not through ``Runbook.open``)."""
    import nbformat

    from harness import manual
    from harness.redact import Redactor
    from harness.rundir import RunDir
    from harness.sequence import export_html

    found = run_of(content)
    if found is None or not (found / "run.json").is_file():
        return None
    run = RunDir(found.resolve())
    target = run.notebooks / source.name
    target.parent.mkdir(parents=True, exist_ok=True)
    redactor = Redactor(secret_values(content))
    tmp = target.with_name(target.name + ".tmp")
    tmp.write_text(redactor.text(nbformat.writes(nbformat.from_dict(copy.deepcopy(content)))) + "\n",
                   encoding="utf-8")
    tmp.replace(target)
    html = export_html(target)
    manual.update_step(run, source.name, output=str(target.relative_to(run.path)),
                       html=str(html.relative_to(run.path)))
    return target


def secret_values(content: dict[str, Any]) -> list[str]:
    """The values the executed parameters cell gives parameters that are secret (named like a secret, or
    marked ``(secret)`` in their comment; ``harness.redact``), as papermill reads the cell."""
    import ast

    import nbformat
    from papermill.translators import PythonTranslator

    from harness.redact import is_secret

    cell = next((c for c in content.get("cells", [])
                 if "parameters" in (c.get("metadata", {}).get("tags") or [])), None)
    if cell is None:
        return []
    values = []
    source = cell.get("source", "")
    source = "".join(source) if isinstance(source, list) else source
    for param in PythonTranslator.inspect(nbformat.v4.new_code_cell(source)):
        if not is_secret(param.name, param.help):
            continue
        try:
            value = ast.literal_eval(param.default)
        except (ValueError, SyntaxError):
            continue
        if value not in (None, ""):
            values.append(str(value))
    return values
