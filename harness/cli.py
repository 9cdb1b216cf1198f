"""``harness`` command: run and resume runbook sequences, list and compare runs, rebuild a report,
sign and verify runs (``keys``, ``verify``), check a waiver file, and name the run that runbooks opened
by hand write into (``harness manual``)."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from pathlib import Path

from harness.errors import RunbookError
from harness.history import NOISE_PCT

EXIT_CODES = """exit codes of run and resume:
  0    GO: every required runbook passed and no gate failed or was left indeterminate
  1    NO-GO: the run finished (report written) and something failed, was left indeterminate
       (a percentile interval straddling its target, a gate measured on a contended box) or did not run
  2    refused before anything started: bad parameter, bad sequence or target file, a waiver file that
       waives a whole stage or has no expiry, or another run holds this stack (the message names
       its pid)
  130  interrupted (Ctrl-C or SIGTERM): the report, results so far and ledger are still written,
       services the run started are stopped; `harness resume RUN` continues it"""


def _say(message: str) -> None:
    print(message, flush=True)


def _finish(run_dir: Path, junit: Path | None) -> int:
    """Print the verdict of a run (each reason with its next step), write its JUnit file if asked; 0
    for GO, 1 for NO-GO."""
    from harness.review import review_run

    review = review_run(run_dir)
    verdict = review.verdict
    _say(f"verdict: {verdict.label}")
    for finding in review.findings[:10]:
        _say(f"  - {finding.reason}")
        if finding.remedy:
            _say(f"    next: {finding.remedy.text()}")
    for used in review.waivers.used if review.waivers else []:
        _say(f"  waived by {used.waiver.label}: {', '.join(f'{r.id} ({r.measured})' for r in used.waived)}")
    if junit:
        from harness.junit import write_junit

        _say(f"junit: {write_junit(run_dir, junit)}")
    _say(f"report: {run_dir / 'report.html'}")
    return 0 if verdict.go else 1


def _interrupted(run_dir: Path, junit: Path | None) -> int:
    print("interrupted", file=sys.stderr)
    if (run_dir / "run.json").is_file():
        _finish(run_dir, junit)
    return 130


def cmd_run(args) -> int:
    from harness import params
    from harness.rundir import default_runs_dir, new_run_id
    from harness.sequence import run_sequence

    raw = params.parse_assignments(args.parameters)
    run_id = args.run_id or new_run_id()
    run_dir = Path(args.runs_dir or default_runs_dir()).resolve() / run_id
    try:
        run_sequence(args.sequence, raw, args.runs_dir, keep_up=args.keep_up, progress=_say, run_id=run_id,
                     waivers=args.waivers, target=args.target)
    except KeyboardInterrupt:
        return _interrupted(run_dir, args.junit)
    return _finish(run_dir, args.junit)


def cmd_resume(args) -> int:
    from harness import params
    from harness.history import resolve_run
    from harness.sequence import resume_sequence

    try:
        run_dir = resolve_run(args.run, args.runs_dir)
    except FileNotFoundError as exc:
        raise RunbookError(str(exc)) from None
    raw = params.parse_assignments(args.parameters)
    try:
        resume_sequence(run_dir, raw, keep_up=args.keep_up, progress=_say)
    except KeyboardInterrupt:
        return _interrupted(run_dir, args.junit)
    return _finish(run_dir, args.junit)


def cmd_params(args) -> int:
    from harness.params import RESERVED, declared_parameters
    from harness.sequence import load_sequence

    seq = load_sequence(args.sequence)
    for nb in seq.notebook_paths():
        _say(nb.name)
        for p in declared_parameters(nb).values():
            if p.name not in RESERVED:
                secret = "  [secret: redacted under runs/]" if p.secret else ""
                _say(f"  -p {p.name}=…  ({p.type_name}, default {p.default}){'  ' + p.help if p.help else ''}{secret}")
    return 0


def cmd_report(args) -> int:
    from harness import attest
    from harness.history import resolve_run
    from harness.report import write_report

    try:
        run_dir = resolve_run(args.run, args.runs_dir)
    except FileNotFoundError as exc:
        raise RunbookError(str(exc)) from None
    signed = (run_dir / attest.FILE_NAME).is_file()
    changed = attest.tampered(run_dir) if signed else []
    write_report(run_dir)
    if signed and changed:
        _say("not re-signed: the run changed since it was signed (`harness verify` names what); the "
             "attestation is left as it was")
    elif signed:
        from harness.ledger import write_ledger

        write_ledger(run_dir)
        _say(attest.close_run(run_dir))
    _finish(run_dir, args.junit)
    return 0


def cmd_verify(args) -> int:
    from harness import attest, signing
    from harness.history import resolve_run

    try:
        run_dir = resolve_run(args.run, args.runs_dir)
    except FileNotFoundError as exc:
        raise RunbookError(str(exc)) from None
    trusted = [signing.load_public(k) for k in args.key] if args.key else attest.trusted_local()
    if not trusted:
        raise RunbookError(f"no key to verify with: pass --key PUBLIC_KEY_FILE (the signer's .pub), or make "
                           f"this machine's with `harness keys init` ({attest.signing_key_path()})")
    check = attest.verify_run(run_dir, trusted)
    _say(f"run: {run_dir}")
    for line in check.lines():
        _say(line)
    return 0 if check.ok else 1


def cmd_keys(args) -> int:
    from harness import signing
    from harness.rundir import default_runs_dir
    from suite.settings import Settings

    path = Path(args.key) if args.key else Settings().signing_key_path
    forbidden = [default_runs_dir(), *([args.runs_dir] if args.runs_dir else [])]
    if args.action == "init":
        key, made = signing.init_key(path, forbidden)
        _say(("made" if made else "kept the existing") + f" signing key {key.path} (0600), key id {key.keyid}")
    else:
        key = signing.load_key(path, forbidden)
        _say(f"signing key {key.path}")
    if args.brief:
        return 0
    _say(f"key id (fingerprint): {key.keyid}")
    _say(f"public key ({key.public_path}; give it to whoever verifies: harness verify RUN --key FILE):")
    _say(signing.public_pem(key.public).decode().rstrip())
    return 0


def cmd_waivers(args) -> int:
    from datetime import UTC, datetime

    from harness import waivers

    today = datetime.now(UTC).date()
    found = waivers.load(args.file)
    for w in found:
        state = f"EXPIRED on {w.expires}" if w.expired(today) else f"in force until {w.expires}"
        _say(f"{w.label}: {state}\n    {w.justification}")
    _say(f"{len(found)} waiver(s) accepted by `harness run --waivers {args.file}`")
    return 1 if any(w.expired(today) for w in found) else 0


def cmd_list(args) -> int:
    from harness.history import list_runs

    runs = list_runs(args.runs_dir)
    if not runs:
        _say("no runs yet (`harness run` writes them under runs/)")
        return 0
    _say(f"{'run':<34} {'verdict':<7} {'started (UTC)':<16} {'git':<9} {'sequence/profile':<16} "
         f"{'checks':<30} key figures")
    for summary in runs[-args.last:] if args.last else runs:
        _say(summary.line())
    return 0


def cmd_diff(args) -> int:
    from harness.history import diff, resolve_run

    try:
        before, after = resolve_run(args.before, args.runs_dir), resolve_run(args.after, args.runs_dir)
    except FileNotFoundError as exc:
        raise RunbookError(str(exc)) from None
    for line in diff(before, after, noise_pct=args.noise).lines(every=args.all):
        _say(line)
    return 0


def cmd_box(args) -> int:
    from harness.envcheck.contention import box_lines

    for line in box_lines(args.seconds, args.rounds):
        _say(line)
    return 0


def cmd_manual(args) -> int:
    from harness import manual

    if args.action == "start":
        try:
            path = manual.start(args.runs_dir, args.name or "")
        except ValueError as exc:
            raise RunbookError(str(exc)) from None
        _say(f"manual run: {path}")
        _say(f"every runbook opened by hand now writes here (named in {manual.pointer_file(args.runs_dir)}); "
             "`harness manual stop` ends it")
    elif args.action == "stop":
        closed = manual.stop(args.runs_dir)
        _say(f"closed manual run {closed}; the next runbook opened by hand starts a new one" if closed
             else "no manual run to close")
    else:
        chosen = manual.choose(args.runs_dir)
        _say(f"{'a new run' if chosen.new else 'run'}: {chosen.path}")
        _say(f"why: {chosen.reason}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="harness", description="Run executable runbooks and report on them.",
                                epilog=EXIT_CODES, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-v", "--verbose", action="store_true")
    sub = p.add_subparsers(dest="command", required=True)

    def runs_dir(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--runs-dir", type=Path, help="where run directories are (default: ./runs)")

    def junit(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--junit", type=Path, metavar="FILE",
                            help="also write the results as JUnit XML (one test case per check)")

    def parameters(parser: argparse.ArgumentParser, help_text: str) -> None:
        parser.add_argument("-p", "--parameter", dest="parameters", action="append", default=[],
                            metavar="NAME=VALUE", help=help_text)

    run = sub.add_parser("run", help="execute a runbook sequence with papermill into runs/<run-id>/",
                         epilog=EXIT_CODES, formatter_class=argparse.RawDescriptionHelpFormatter)
    run.add_argument("sequence", nargs="?", type=Path, help="sequence file (default: runbooks/sequence.yaml)")
    parameters(run, "runbook parameter, typed by the runbooks' parameters cells (repeatable); "
                    "e.g. -p profile=quick for the short development load")
    runs_dir(run)
    run.add_argument("--run-id", help="name of the run directory (default: timestamp + random)")
    run.add_argument("--keep-up", action="store_true", help="leave services this run started running")
    run.add_argument("--waivers", type=Path, metavar="FILE",
                     help="accepted exceptions (waivers.toml: check pattern, justification, owner, expires); "
                          "copied into the run; a waiver of a whole stage or without expiry is refused")
    run.add_argument("--target", type=Path, metavar="FILE",
                     help="certify the stack this target file describes (TOML/YAML: parts by role, URLs, the "
                          "environment variables holding their keys, what the run may do) instead of starting "
                          "the suite's own; docs/targets.md")
    junit(run)
    run.set_defaults(func=cmd_run)

    res = sub.add_parser("resume", help="continue a run from its first runbook that did not pass",
                         epilog=EXIT_CODES, formatter_class=argparse.RawDescriptionHelpFormatter)
    res.add_argument("run", help="run directory or run id (`last`: the newest run)")
    parameters(res, "secret parameters of the run again (they were never stored)")
    runs_dir(res)
    res.add_argument("--keep-up", action="store_true", help="leave services this run started running")
    junit(res)
    res.set_defaults(func=cmd_resume)

    lst = sub.add_parser("list", help="runs with verdict, date, git sha and key figures")
    runs_dir(lst)
    lst.add_argument("-n", "--last", type=int, default=0, help="only the newest N runs")
    lst.set_defaults(func=cmd_list)

    dif = sub.add_parser("diff", help="what changed between two runs: gates, measurements, warnings")
    dif.add_argument("before", help="run directory or run id")
    dif.add_argument("after", help="run directory or run id (`last`: the newest run)")
    dif.add_argument("--noise", type=float, default=NOISE_PCT, metavar="PCT",
                     help="the noise floor of figures judged by percent (throughput, failure ratios; default 10); "
                          "load percentiles are judged by their 95 %% intervals, one-shot latencies by earlier runs' spread")
    dif.add_argument("--all", action="store_true", help="list every measurement, with how its noise was judged")
    runs_dir(dif)
    dif.set_defaults(func=cmd_diff)

    box = sub.add_parser("box", help="is the box quiet? CPU steal, CPU outside the stack and the harness, a CPU benchmark")
    box.add_argument("seconds", type=float, nargs="?", default=10.0, help="sampling window of each round (default 10)")
    box.add_argument("rounds", type=int, nargs="?", default=3, help="rounds (default 3)")
    box.set_defaults(func=cmd_box)

    prm = sub.add_parser("params", help="list the parameters the runbooks of a sequence accept")
    prm.add_argument("sequence", nargs="?", type=Path)
    prm.set_defaults(func=cmd_params)

    man = sub.add_parser("manual", help="the run that runbooks opened by hand write into (JupyterLab, nbmake)",
                         description="Runbooks opened by hand join one manual run: HARNESS_RUN_DIR, else the run "
                                     "named in runs/current (start / stop), else the newest open manual run active "
                                     "in the last HARNESS_MANUAL_HOURS hours (8), else a new one.")
    man.add_argument("action", choices=["show", "start", "stop"], nargs="?", default="show",
                     help="show (default): which run a runbook opened now would use, and why; start: a new "
                          "manual run every runbook opened by hand joins; stop: close it")
    man.add_argument("--name", help="run id of the run `start` makes (default: manual-<date>-<time>)")
    runs_dir(man)
    man.set_defaults(func=cmd_manual)

    rep = sub.add_parser("report", help="(re)build report.html of a run directory")
    rep.add_argument("run", help="run directory or run id (`last`: the newest run)")
    runs_dir(rep)
    junit(rep)
    rep.set_defaults(func=cmd_report)

    ver = sub.add_parser("verify", help="check a run against its signed attestation: signature and every file's hash",
                         epilog="exit 0: verified; 1: the signature or a file does not match (each named); "
                                "2: no attestation or no key to check it with")
    ver.add_argument("run", help="run directory or run id (`last`: the newest run)")
    ver.add_argument("--key", action="append", type=Path, metavar="PUBLIC_KEY",
                     help="the signer's public key file (PEM; repeatable); default: this machine's signing key")
    runs_dir(ver)
    ver.set_defaults(func=cmd_verify)

    key = sub.add_parser("keys", help="the Ed25519 key that signs each run's attestation")
    key.add_argument("action", choices=["init", "show"],
                     help="init: make the key unless one exists (private 0600); show: its id and public key")
    key.add_argument("--key", type=Path, metavar="FILE", help="private key file (default: the settings' signing.key, "
                                                             "<data_dir>/signing/harness-ed25519.pem)")
    key.add_argument("--brief", action="store_true", help="one line (scripts/run.sh)")
    runs_dir(key)
    key.set_defaults(func=cmd_keys)

    wai = sub.add_parser("waivers", help="check a waiver file as `harness run --waivers` will (exit 1: one expired)")
    wai.add_argument("file", type=Path)
    wai.set_defaults(func=cmd_waivers)
    return p


def _terminate(signum, frame) -> None:
    raise KeyboardInterrupt  # SIGTERM (a CI job cancelled) closes the run like Ctrl-C


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    signal.signal(signal.SIGTERM, _terminate)
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
