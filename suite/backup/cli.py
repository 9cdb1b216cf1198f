"""``suite backup create|list|verify|prune`` and ``suite restore SET``.

``suite restore SET --into DIR`` restores into a scratch folder (the restore drill: nothing running is
touched). Without ``--into`` it rolls the live stack back: safety backup, stop, restore, start, health
check with retries, and back to the safety backup — said loudly, exit 1 — if the restored stack is not
healthy. Exit 2: the set was refused (it does not verify) or the restore could not run.
"""

from __future__ import annotations

import json
import sys

from suite.settings import Settings

# The backup machinery (qdrant-client, qdrant-edge) is imported by the commands that use it, not when
# `suite` builds its parser: every other sub-command (`suite keys ...` above all) starts ~1 s sooner.


def _say(message: str) -> None:
    print(message, flush=True)


def _emit(args, data, human: str = "") -> None:
    if args.json:
        print(json.dumps(data, indent=2, ensure_ascii=False, default=str))
    elif human:
        _say(human)


def _quiet(args):
    return (lambda _m: None) if args.json else _say


def cmd_backup(settings: Settings, args) -> int:
    from suite.backup.runner import create_set, resolve_set
    from suite.backup.sets import BackupError, list_sets, prune, verify_set
    from suite.vectorstore import StoreError

    root = settings.backup_dir
    try:
        if args.backup_action == "create":
            path = create_set(settings, kind=args.kind, progress=_quiet(args))
            _emit(args, {"set": path.name, "path": str(path), "manifest": verify_set(path)})
        elif args.backup_action == "list":
            sets = list_sets(root)
            _emit(args, sets, "\n".join(f"{s['set']:<36} {s.get('kind') or '?':<8} {s.get('bytes') or 0:>12} B  "
                                        f"{s.get('error', '')}" for s in sets) or f"no backup sets in {root}")
        elif args.backup_action == "verify":
            path = resolve_set(settings, args.set)
            manifest = verify_set(path)
            _emit(args, {"set": path.name, "ok": True, "files": len(manifest["files"])},
                  f"{path.name}: every file matches its size and sha256 ({len(manifest['files'])} files)")
        else:
            keep_last = args.keep_last if args.keep_last is not None else settings.backup.keep_last
            keep_days = args.keep_days if args.keep_days is not None else settings.backup.keep_days
            out = prune(root, keep_last, keep_days, dry_run=args.dry_run)
            _emit(args, out, f"kept {len(out['kept'])}, {'would remove' if args.dry_run else 'removed'} "
                             f"{len(out['removed'])}: {', '.join(out['removed']) or '-'}")
    except (BackupError, StoreError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


def cmd_restore(settings: Settings, args) -> int:
    from suite.backup.runner import RollbackFailed, resolve_set, restore_set, rollback
    from suite.backup.sets import BackupError
    from suite.vectorstore import StoreError

    try:
        path = resolve_set(settings, args.set)
        if args.into:
            out = restore_set(settings, path, into=args.into, progress=_quiet(args))
            _emit(args, out, f"restored {path.name} into {args.into}")
            return 0
        from suite.supervisor import get_backend

        out = rollback(settings, path, get_backend(settings), progress=_say if not args.json else _stderr)
    except RollbackFailed as exc:
        print(f"!!! {exc}", file=sys.stderr)
        return 2
    except (BackupError, StoreError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    _emit(args, out, f"outcome: {out['outcome']}; RTO {out['rto_s']}s, RPO {out['rpo_s']}s")
    return 0 if out["outcome"] == "restored" else 1


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def register(sub) -> None:
    bk = sub.add_parser("backup", help="backup sets: vector store + memory.db + security.db, with a manifest")
    actions = bk.add_subparsers(dest="backup_action", required=True)
    cr = actions.add_parser("create", help="take a set now (services keep serving)")
    cr.add_argument("--kind", default="manual", choices=["manual", "scheduled", "safety", "drill"])
    ls = actions.add_parser("list", help="sets, oldest first")
    vf = actions.add_parser("verify", help="check every file of a set against its manifest")
    vf.add_argument("set", help="set id, path, or 'latest'")
    pr = actions.add_parser("prune", help="retention: keep the newest N and anything younger than D days")
    pr.add_argument("--keep-last", type=int)
    pr.add_argument("--keep-days", type=float)
    pr.add_argument("--dry-run", action="store_true")
    for p in (cr, ls, vf, pr):
        p.add_argument("--json", action="store_true")
    bk.set_defaults(func=cmd_backup)
    rs = sub.add_parser("restore", help="restore a set: --into DIR (scratch), or roll the live stack back")
    rs.add_argument("set", help="set id, path, or 'latest'")
    rs.add_argument("--into", help="scratch folder (empty or new) laid out as a data dir; nothing live is touched")
    rs.add_argument("--json", action="store_true")
    rs.set_defaults(func=cmd_restore)
