"""``harness`` command: run runbook sequences, list their parameters, rebuild a report."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from harness.errors import RunbookError


def _say(message: str) -> None:
    print(message, flush=True)


def cmd_run(args) -> int:
    from harness import params
    from harness.report import verdict_of
    from harness.sequence import run_sequence

    raw = params.parse_assignments(args.parameters)
    outcome = run_sequence(args.sequence, raw, args.runs_dir, keep_up=args.keep_up, progress=_say,
                           run_id=args.run_id)
    verdict = verdict_of(outcome.run.path)
    _say(f"verdict: {verdict.label}")
    for reason in verdict.reasons[:10]:
        _say(f"  - {reason}")
    _say(f"report: {outcome.report}")
    return 0 if verdict.go else 1


def cmd_params(args) -> int:
    from harness.params import RESERVED, declared_parameters
    from harness.sequence import load_sequence

    seq = load_sequence(args.sequence)
    for nb in seq.notebook_paths():
        _say(nb.name)
        for p in declared_parameters(nb).values():
            if p.name not in RESERVED:
                _say(f"  -p {p.name}=…  ({p.type_name}, default {p.default}){'  ' + p.help if p.help else ''}")
    return 0


def cmd_report(args) -> int:
    from harness.report import verdict_of, write_report

    path = write_report(Path(args.run_dir))
    _say(f"verdict: {verdict_of(Path(args.run_dir)).label}")
    _say(f"report: {path}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="harness", description="Run executable runbooks and report on them.")
    p.add_argument("-v", "--verbose", action="store_true")
    sub = p.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="execute a runbook sequence with papermill into runs/<run-id>/")
    run.add_argument("sequence", nargs="?", type=Path, help="sequence file (default: runbooks/sequence.yaml)")
    run.add_argument("-p", "--parameter", dest="parameters", action="append", default=[], metavar="NAME=VALUE",
                     help="runbook parameter, typed by the runbooks' parameters cells (repeatable)")
    run.add_argument("--runs-dir", type=Path, help="where run directories go (default: ./runs)")
    run.add_argument("--run-id", help="name of the run directory (default: timestamp + random)")
    run.add_argument("--keep-up", action="store_true", help="leave services this run started running")
    run.set_defaults(func=cmd_run)
    prm = sub.add_parser("params", help="list the parameters the runbooks of a sequence accept")
    prm.add_argument("sequence", nargs="?", type=Path)
    prm.set_defaults(func=cmd_params)
    rep = sub.add_parser("report", help="(re)build report.html of a run directory")
    rep.add_argument("run_dir")
    rep.set_defaults(func=cmd_report)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        return args.func(args)
    except RunbookError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
