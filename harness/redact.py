"""Secret runbook parameters never reach a file under ``runs/<id>/``.

A parameter is secret when its name says so or its comment in the parameters cell contains
``(secret)``. The name says so when one of its parts (split at ``_``, ``-`` and camelCase) is a
secret word (``key``, ``token``, ``password``, ``passwd``, ``secret``, ``apikey``, ``credential(s)``:
``api_key``, ``hf_token``, ``client_secret``), or its last part is ``pass``/``pwd`` (``db_pass``) or
ends with a secret word other than ``key`` (``authtoken``, ``adminpassword``). Whole parts only:
``max_tokens``, ``keys_dir`` or ``monkey`` are not secret. Its value is replaced by ``[redacted]``:

- in the executed notebooks as papermill writes them (an I/O handler for the run's notebooks folder,
  so not even a half-written notebook of a killed run holds the value: the injected-parameters cell,
  papermill's metadata, and any output that printed it),
- in ``run.json`` (by name), ``steps.json`` error texts and the progress lines,
- and in every other text file of the run by a sweep after each runbook (results, HTML, Locust
  output), before the report and the ledger are written.

Values shorter than ``MIN_LENGTH`` characters are redacted by name only (replacing "1" everywhere
would corrupt the files).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from suite.fsio import write_atomic

MASK = "[redacted]"
MIN_LENGTH = 4
SECRET_WORDS = frozenset({"key", "token", "password", "passwd", "passphrase", "secret", "credential",
                          "credentials", "apikey", "accesskey", "authkey", "privatekey", "secretkey"})
SECRET_LAST_WORDS = frozenset({"pass", "pwd"})  # secret only at the end: db_pass, yet pass_rate is not
SECRET_SUFFIXES = tuple(sorted(SECRET_WORDS - {"key"}))  # glued on: authtoken (but not monkey)
SECRET_MARK = "(secret)"
_PARTS = re.compile(r"[A-Z]+(?![a-z])|[A-Z]?[a-z]+|\d+")  # LOAD_API_KEY, apiKey, HFToken, key2


def name_parts(name: str) -> list[str]:
    """``"hf_token"`` -> ``["hf", "token"]``; ``"maxTokens"`` -> ``["max", "tokens"]``."""
    return [part.lower() for chunk in re.split(r"[_\-\s.]+", name) for part in _PARTS.findall(chunk)]


def is_secret(name: str, help_text: str = "") -> bool:
    """Named like a secret (whole name parts, see the module docstring) or marked ``(secret)``."""
    if SECRET_MARK in (help_text or "").lower():
        return True
    parts = name_parts(name)
    if not parts:
        return False
    last = parts[-1]
    return (any(part in SECRET_WORDS for part in parts) or last in SECRET_LAST_WORDS
            or last.endswith(SECRET_SUFFIXES))


class Redactor:
    """Replaces known secret values (raw and JSON-escaped) in text and files."""

    def __init__(self, values: Iterable[str] = ()) -> None:
        self.forms: list[str] = []
        self.add(values)

    def add(self, values: Iterable[str]) -> None:
        """More values to mask (e.g. the API keys a run mints)."""
        forms = set(self.forms)
        for value in values:
            if isinstance(value, str) and len(value) >= MIN_LENGTH:
                forms.add(value)
                forms.add(json.dumps(value)[1:-1])  # as it stands inside a JSON string
                forms.add(json.dumps(value, ensure_ascii=False)[1:-1])
        self.forms = sorted(forms, key=len, reverse=True)  # longest first: no half-replaced value

    def __bool__(self) -> bool:
        return bool(self.forms)

    def text(self, text: str) -> str:
        for form in self.forms:
            text = text.replace(form, MASK)
        return text

    def file(self, path: Path) -> bool:
        """Redact one text file in place (atomically); False when unchanged or not text."""
        try:
            original = Path(path).read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError):
            return False
        cleaned = self.text(original)
        if cleaned == original:
            return False
        write_atomic(path, cleaned)
        return True

    def tree(self, folder: Path) -> list[Path]:
        """Redact every text file below ``folder``; the files changed."""
        if not self.forms:
            return []
        return [p for p in sorted(Path(folder).rglob("*")) if p.is_file() and self.file(p)]


def redact_parameters(parameters: Mapping[str, Any], secret_names: Iterable[str]) -> dict[str, Any]:
    """``parameters`` with the values of secret names masked (for ``run.json`` and the report)."""
    names = set(secret_names)
    return {k: (MASK if k in names else v) for k, v in parameters.items()}


class RedactingHandler:
    """A papermill I/O handler that writes notebooks through a ``Redactor`` and ``suite.fsio`` (reads
    pass through)."""

    def __init__(self, redactor: Redactor) -> None:
        from papermill.iorw import LocalHandler

        self.redactor = redactor
        self.local = LocalHandler()

    def read(self, path: str) -> str:
        return self.local.read(path)

    def listdir(self, path: str) -> list[str]:
        return self.local.listdir(path)

    def write(self, buf: str, path: str) -> None:
        # papermill rewrites the notebook after every cell: crash-safe, so a killed run leaves the
        # notebook as of its last finished cell, never half a JSON file
        write_atomic(path, self.redactor.text(buf))

    def pretty_path(self, path: str) -> str:
        return self.local.pretty_path(path)


def redact_notebook_writes(folder: Path, redactor: Redactor) -> None:
    """Route papermill's writes below ``folder`` through ``redactor`` (for this process's lifetime:
    papermill's handler registry has no removal, and the folder belongs to one run). The redactor
    may learn more values later (``Redactor.add``)."""
    from papermill.iorw import papermill_io

    papermill_io.register(str(Path(folder).resolve()) + os.sep, RedactingHandler(redactor))
