"""Documents from a folder: only inside ``rag.allowed_dirs``; text files one document each, JSON
files a list of ``{"id", "text", "metadata"}`` (or ``{"documents": [...]}``)."""

from __future__ import annotations

import json
from pathlib import Path

from pydantic import ValidationError

from suite.rag.schemas import Document

TEXT_SUFFIXES = {".txt", ".md", ".rst"}
MAX_FILE_BYTES = 2_000_000


class FolderError(ValueError):
    """A folder that may not be read, or a file in it that is not a valid document set."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


def resolve_folder(folder: str, allowed: list[Path]) -> Path:
    """The folder, resolved, when it lies inside one of the allowed directories."""
    roots = [Path(a).expanduser().resolve() for a in allowed]
    if not roots:
        raise FolderError("indexing from folders is disabled (rag.allowed_dirs is empty)", status=403)
    if "\x00" in folder:  # the OS cannot name it (os.stat raises ValueError, not OSError)
        raise FolderError("folder must not contain a NUL character")
    try:
        path = Path(folder).expanduser().resolve()
    except (OSError, RuntimeError) as exc:  # a name too long, a symlink loop, an unknown ~user
        raise FolderError(f"folder cannot be resolved: {exc}") from None
    if not any(path == r or path.is_relative_to(r) for r in roots):
        raise FolderError(f"folder {path} is outside rag.allowed_dirs ({', '.join(map(str, roots))})",
                          status=403)
    try:
        is_dir = path.is_dir()
    except OSError as exc:  # e.g. a name too long (is_dir only swallows "not found")
        raise FolderError(f"folder cannot be read: {exc.strerror}") from None
    if not is_dir:
        raise FolderError(f"folder {path} does not exist or is not a directory")
    return path


def documents_from_folder(folder: Path) -> list[Document]:
    """Every supported file under ``folder`` (recursively, sorted) as documents. A symlink, or a file
    with another hard link, may lead outside the folder: it is skipped, like the tool sandbox's reads."""
    docs: list[Document] = []
    for file in sorted(p for p in folder.rglob("*") if p.is_file()):
        if file.is_symlink() or not file.resolve().is_relative_to(folder) or file.stat().st_nlink > 1:
            continue
        suffix = file.suffix.lower()
        if suffix not in TEXT_SUFFIXES and suffix != ".json":
            continue
        if file.stat().st_size > MAX_FILE_BYTES:
            raise FolderError(f"{file} is larger than {MAX_FILE_BYTES} bytes")
        rel = str(file.relative_to(folder))
        text = file.read_text(encoding="utf-8", errors="replace")
        if suffix == ".json":
            docs.extend(_json_documents(file, text))
        elif text.strip():
            docs.append(Document(id=rel, text=text, metadata={"source": rel}))
    return docs


def _json_documents(file: Path, text: str) -> list[Document]:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise FolderError(f"{file.name} is not valid JSON: {exc.msg} (line {exc.lineno})") from None
    items = data.get("documents") if isinstance(data, dict) else data
    if not isinstance(items, list):
        raise FolderError(f"{file.name} must hold a list of documents or {{\"documents\": [...]}}")
    try:
        return [Document(**item) for item in items]
    except (TypeError, ValidationError) as exc:
        raise FolderError(f"{file.name} holds an invalid document: {exc}") from None
