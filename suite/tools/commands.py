"""``run_command``'s argument policy: the sandbox owns the parsing of every argument.

Each allow-listed program has a table of the options it may get (``COMMANDS``); every option is
matched exactly (GNU's unambiguous-prefix matching of long options is not offered: ``--files0``
would otherwise reach ``--files0-from``), and an option outside the table is refused. Whatever is
not an option — every operand, everything after ``--`` — is a path, resolved through the sandbox
(``..`` refused, symlinks followed and kept inside a root, devices/FIFOs/sockets and hard-linked
files refused) and handed to the program as that *resolved* path, relative to the working folder,
after a ``--`` of our own. So an operand can never be read as an option, and an option's value can
never be a path: options that name files (``--files0-from``, ``ls -L``'s dereferencing, ``tail
--pid``…) are simply not in any table.

A program in ``settings.tools.command_allowlist`` without a table here takes no options at all,
only paths (and gets no ``--`` inserted, since it may not know it; operands start with ``./`` when
they would start with ``-``).
"""

from __future__ import annotations

import os
import re
import stat
from dataclasses import dataclass
from pathlib import Path

from suite.tools.errors import ToolError
from suite.tools.sandbox import Sandbox

COUNT = re.compile(r"^[+-]?\d{1,18}(?:b|kB|K|KiB|MB|M|MiB|GB|G|GiB)?$")  # head/tail -n/-c values


@dataclass(frozen=True)
class CommandSpec:
    """What one program may be given."""

    short: str = ""  # single-letter flags without a value (may be clustered: -la)
    long: frozenset[str] = frozenset()  # --flags without a value
    counts: frozenset[str] = frozenset()  # options whose value is a count: '-n', '--lines'
    operands: str = "path"  # 'path': resolved and replaced; 'echo': checked as paths, passed verbatim
    double_dash: bool = True  # understands '--' (everything after it is an operand)
    leading_options_only: bool = False  # options only before the first operand (echo)
    obsolete_count: bool = False  # '-5' means '-n 5' (head, tail)


_HEAD_TAIL_LONG = frozenset({"--quiet", "--silent", "--verbose", "--zero-terminated"})
_COUNTS = frozenset({"-n", "-c", "--lines", "--bytes"})

COMMANDS: dict[str, CommandSpec] = {
    "cat": CommandSpec(short="AbeEnstTuv", long=frozenset({
        "--show-all", "--number-nonblank", "--show-ends", "--number", "--squeeze-blank", "--show-tabs",
        "--show-nonprinting"})),
    # no -L/-H/--dereference*: they would follow a symlink inside a listed folder out of the sandbox
    "ls": CommandSpec(short="aAbBcCdfFgGhiklmnNopqQrRsStuUvxX1", long=frozenset({
        "--all", "--almost-all", "--escape", "--ignore-backups", "--directory", "--classify",
        "--no-group", "--human-readable", "--si", "--inode", "--numeric-uid-gid", "--literal",
        "--hide-control-chars", "--quote-name", "--reverse", "--recursive", "--size",
        "--group-directories-first"})),
    "wc": CommandSpec(short="cmlLw", long=frozenset({
        "--bytes", "--chars", "--lines", "--max-line-length", "--words"})),  # no --files0-from
    "head": CommandSpec(short="qvz", long=_HEAD_TAIL_LONG, counts=_COUNTS, obsolete_count=True),
    "tail": CommandSpec(short="fqvz", long=_HEAD_TAIL_LONG | {"--follow"}, counts=_COUNTS,
                        obsolete_count=True),
    # echo opens nothing, so its words are passed as written; they are still refused if, read as
    # paths, they would lead out of the sandbox (so nothing reads as a path outside it)
    "echo": CommandSpec(short="neE", operands="echo", double_dash=False, leading_options_only=True),
}
GENERIC = CommandSpec(double_dash=False)


@dataclass(frozen=True)
class CheckedCommand:
    argv: list[str]  # what is executed (program name first)
    program: str


def check_command(sandbox: Sandbox, argv: list[str], cwd: Path, allowlist: list[str]) -> CheckedCommand:
    """The argv to run for a requested one, or a ``ToolError`` (403 for what the policy refuses,
    400 for what cannot be understood)."""
    if not argv or argv[0] not in allowlist or "/" in argv[0] or argv[0] in (".", ".."):
        raise ToolError(403, f"command '{_short(argv[0]) if argv else ''}' is not in the allow-list "
                             f"({', '.join(allowlist)})", "command_not_allowed")
    program = argv[0]
    spec = COMMANDS.get(program, GENERIC)
    options: list[str] = []
    operands: list[str] = []
    args = iter(argv[1:])
    only_operands = False
    for arg in args:
        if only_operands or arg == "-" or not arg.startswith("-") or (
                spec.leading_options_only and operands):
            operands.append(arg)
            if spec.leading_options_only:
                only_operands = True
            continue
        if arg == "--":
            if not spec.double_dash:
                raise ToolError(403, f"'{program}' does not take '--'; give paths that do not start with '-'",
                                "option_not_allowed")
            only_operands = True
            continue
        options.extend(_option(program, spec, arg, args))
    resolved = [_operand(sandbox, program, spec, op, cwd) for op in operands]
    if spec is GENERIC or not spec.double_dash:
        final = [program, *options, *resolved]
    else:
        final = [program, *options, *(["--", *resolved] if resolved else [])]
    return CheckedCommand(final, program)


def _option(program: str, spec: CommandSpec, arg: str, rest) -> list[str]:
    """The option(s) ``arg`` stands for, normalised; refuses anything not in the table."""
    if arg.startswith("--"):
        name, eq, value = arg.partition("=")
        if name in spec.counts:
            return [name, _count(program, name, value if eq else next(rest, None))]
        if name in spec.long and not eq:
            return [name]
        raise _not_allowed(program, spec, arg)
    if spec.obsolete_count and arg[1:].isdigit() and len(arg) <= 10:
        return ["-n", arg[1:]]
    out = []
    letters = arg[1:]
    for i, letter in enumerate(letters):
        opt = "-" + letter
        if opt in spec.counts:  # -n5 or -n 5: the rest of the cluster (or the next word) is the value
            value = letters[i + 1:] or next(rest, None)
            out += [opt, _count(program, opt, value)]
            return out
        if letter not in spec.short:
            raise _not_allowed(program, spec, arg)
        out.append(opt)
    return out


def _count(program: str, option: str, value: str | None) -> str:
    if value is None or not COUNT.match(value):
        raise ToolError(400, f"{program} {option} takes a number (like 10, +5 or 4K), not "
                             f"'{_short(value or '')}'", "invalid_option_value")
    return value


def _not_allowed(program: str, spec: CommandSpec, arg: str) -> ToolError:
    allowed = sorted({f"-{c}" for c in spec.short} | spec.long | spec.counts)
    listed = ", ".join(allowed) if allowed else "none (only sandbox paths)"
    return ToolError(403, f"option '{_short(arg)}' is not allowed for {program}; allowed: {listed}",
                     "option_not_allowed")


def _operand(sandbox: Sandbox, program: str, spec: CommandSpec, operand: str, cwd: Path) -> str:
    """A path operand, checked and replaced by its resolved form relative to ``cwd``."""
    if operand == "-":
        return operand  # standard input, which is /dev/null
    real = sandbox.resolve(operand, base=cwd)
    if os.path.lexists(real):
        st = sandbox.lstat(real)
        if not stat.S_ISDIR(st.st_mode):
            sandbox.check_readable(st, _short(operand), size=False)  # the output cap bounds what is read
    if spec.operands == "echo":
        return operand
    rel = os.path.relpath(real, cwd)
    return "./" + rel if rel.startswith("-") else rel


def _short(text: str, limit: int = 120) -> str:
    return text if len(text) <= limit else text[:limit] + "..."
