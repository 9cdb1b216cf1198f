"""``suite`` command: up, down, status, logs, models, tls, config."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time

from suite import services
from suite.auth import cli as auth_cli
from suite.auth import startup as auth_startup
from suite.auth.keys import KeyStore
from suite.backup import cli as backup_cli
from suite.containers import cli as containers_cli
from suite.rag import cli as rag_cli
from suite.settings import Settings
from suite.supervisor import SupervisorError, get_backend
from suite.tools import cli as tools_cli


def _say(message: str) -> None:
    print(message, flush=True)


def cmd_up(settings: Settings, args) -> int:
    auth_startup.check(settings)
    backend = get_backend(settings)
    store = KeyStore.open(settings.key_store_path)
    try:
        active = sum(1 for k in store.list() if k["state"] == "active")
    finally:
        store.close()
    _say(auth_startup.notice(settings, active))
    names = [s.name for s in services.for_phase(args.phase) if not args.only or s.name in args.only]
    _say(f"suite up --phase {args.phase} ({settings.backend} backend, profile {settings.profile}): "
         + ", ".join(names))
    t0 = time.monotonic()
    started = backend.up(args.phase, progress=_say, only=args.only)
    _say(f"ready in {time.monotonic() - t0:.1f}s; started {len(started)}: {', '.join(started) or 'none'}")
    if args.json:
        print(json.dumps({"started": started}))
    return 0


def cmd_down(settings: Settings, args) -> int:
    stopped = get_backend(settings).down(args.services or None)
    _say("stopped: " + (", ".join(stopped) if stopped else "nothing was running"))
    return 0


def cmd_status(settings: Settings, args) -> int:
    """Every service of the phase brought up (all with --all), down ones included; exit 1 when one
    of them is not ready, so scripts can gate on it."""
    states = get_backend(settings).status()
    if not args.all:
        states = [s for s in states if s.configured or s.running]
    if args.json:
        print(json.dumps([s.to_dict() for s in states], indent=2))
    elif not states:
        _say("no service is running (start with `suite up --phase 1`)")
    else:
        _say(f"{'service':<16}{'phase':<7}{'state':<13}{'pid':<9}{'health':<8}{'ready':<7}{'restarts':<10}"
             "last exit / detail")
        for s in states:
            last = f"{s.last_exit} at {s.last_exit_at}" if s.last_exit else ""
            note = "; ".join(x for x in (last, "" if s.ready else s.detail) if x)
            _say(f"{s.name:<16}{s.phase:<7}{s.state:<13}{s.pid or '-':<9}{'ok' if s.healthy else '-':<8}"
                 f"{'ready' if s.ready else 'NO':<7}{s.restarts:<10}{note or s.url}")
    return 0 if states and all(s.ready for s in states) else 1


def cmd_logs(settings: Settings, args) -> int:
    path = get_backend(settings).log_path(args.service)
    if not path.exists():
        _say(f"no log yet for {args.service} ({path})")
        return 1
    lines = path.read_text(errors="replace").splitlines()
    for line in lines[-args.lines:]:
        print(line)
    if args.follow:
        with open(path, errors="replace") as fh:
            fh.seek(0, 2)
            try:
                while True:
                    line = fh.readline()
                    if line:
                        print(line, end="", flush=True)
                    else:
                        time.sleep(0.5)
            except KeyboardInterrupt:
                return 0
    return 0


def cmd_models(settings: Settings, args) -> int:
    from suite.models import bundled_models, install_gemma

    if args.action == "install":
        path = install_gemma(settings.models_dir)
        _say(f"gemma GGUF ready: {path}")
    for m in bundled_models(settings.models_dir):
        state = "present" if m.path.exists() else "MISSING"
        _say(f"{m.name:<32} {state:<8} {m.path}")
    return 0


def cmd_tls(settings: Settings, args) -> int:
    from suite import tls

    if args.action == "init":
        issued = tls.init(settings, args.san, args.service or None, new_ca=args.new_ca)
        _say(f"CA: {settings.tls_dir / 'ca.crt'} (give it to every client: tls.ca_file)")
        for cert in issued:
            _say(f"  {cert.name:<16} valid until {cert.not_after:%Y-%m-%d} for {', '.join(cert.sans)}")
        if not settings.tls.enabled:
            _say("serve them with SUITE_TLS__ENABLED=true (or [tls] enabled = true in suite.toml)")
        return 0
    rows = tls.describe(settings)
    if not rows:
        _say(f"no certificates in {settings.tls_dir} (make them with `suite tls init --san ADDRESS`)")
        return 1
    for row in rows:
        _say(f"{row['name']:<16} {row['mode']:<6} until {row['not_after']:<18} {row['valid_for']}")
    return 0


def cmd_config(settings: Settings, args) -> int:
    print(settings.model_dump_json(indent=2))
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="suite", description="Run the local AI service suite.")
    p.add_argument("--backend", choices=["process", "docker"], help="override settings.backend")
    p.add_argument("--profile", choices=["cpu", "gpu"], help="override settings.profile")
    p.add_argument("-v", "--verbose", action="store_true")
    sub = p.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up", help="start services of phases 1..N and wait until they are ready")
    up.add_argument("--phase", type=int, choices=[1, 2, 3], default=1)
    up.add_argument("--json", action="store_true", help="also print the started services as JSON")
    up.add_argument("--only", action="append", metavar="SERVICE", choices=list(services.BY_NAME),
                    help="start only this service of the phase (repeat; e.g. an inference replica on its own "
                    "host); services in `urls` run elsewhere and are waited for, not started")
    up.set_defaults(func=cmd_up)
    down = sub.add_parser("down", help="stop services (all by default)")
    down.add_argument("services", nargs="*", metavar="SERVICE", help="; ".join(services.BY_NAME))
    down.set_defaults(func=cmd_down)
    st = sub.add_parser("status", help="services of the phase brought up: state, liveness, readiness, "
                        "restarts, last exit (exit 1 when one is not ready)")
    st.add_argument("--json", action="store_true")
    st.add_argument("--all", action="store_true", help="list the services of every phase")
    st.set_defaults(func=cmd_status)
    lg = sub.add_parser("logs", help="print a service's log")
    lg.add_argument("service", choices=list(services.BY_NAME))
    lg.add_argument("-n", "--lines", type=int, default=100)
    lg.add_argument("-f", "--follow", action="store_true")
    lg.set_defaults(func=cmd_logs)
    md = sub.add_parser("models", help="install or list the bundled models")
    md.add_argument("action", choices=["install", "list"], nargs="?", default="list")
    md.set_defaults(func=cmd_models)
    tl = sub.add_parser("tls", help="a private CA and per-service certificates (init), or list them (show)")
    tl.add_argument("action", choices=["init", "show"], nargs="?", default="show")
    tl.add_argument("--san", action="append", default=[], metavar="NAME_OR_IP",
                    help="an address other hosts reach the services at (repeat); loopback and the bind "
                    "address are always included")
    tl.add_argument("--service", action="append", choices=list(services.BY_NAME),
                    help="only these services' certificates (default: every service)")
    tl.add_argument("--new-ca", action="store_true", help="make a new CA too (clients need the new ca.crt)")
    tl.set_defaults(func=cmd_tls)
    cf = sub.add_parser("config", help="print the effective settings as JSON")
    cf.set_defaults(func=cmd_config)
    auth_cli.register(sub)  # keys
    tools_cli.register(sub)  # approvals
    rag_cli.register(sub)  # rag status, rag migrate
    backup_cli.register(sub)  # backup create|list|verify|prune, restore SET
    containers_cli.register(sub)  # engine start|stop|status, image build|base|list
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    os.umask(0o077)  # keys, settings, backup sets and restores it writes are the owner's only, like the services'
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    overrides = {k: v for k, v in (("backend", args.backend), ("profile", args.profile)) if v}
    try:
        settings = Settings(**overrides)
        return args.func(settings, args)
    except SupervisorError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except (ValueError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
