"""``suite keys ...``: the suite's API keys, on the key store file directly.

The CLI runs on the machine that holds the data dir, so it needs no API key (like ``sqlite3``
would not): creating keys needs access to the data dir, not the network.
"""

from __future__ import annotations

import json
from datetime import datetime

from suite.auth.keys import KeyStore, parse_ttl
from suite.auth.roles import ROLES
from suite.settings import Settings


def when(ts: float | None) -> str:
    return datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M:%S") if ts else "-"


def cmd_keys(settings: Settings, args) -> int:
    store = KeyStore.open(settings.key_store_path)
    try:
        if args.keys_action == "create":
            ttl = parse_ttl(args.ttl) if args.ttl else None
            principal, key = store.create(args.role, args.name or "", ttl, args.run)
            if args.json:
                print(json.dumps({"id": principal.key_id, "role": principal.role, "name": principal.name,
                                  "expires_at": principal.expires_at, "run_id": args.run, "key": key}))
            else:
                until = f", expires {when(principal.expires_at)}" if principal.expires_at else ", no expiry"
                print(f"created {principal.role} key {principal.key_id}{until}; it is shown only once:\n{key}")
            return 0
        if args.keys_action == "list":
            rows = [r for r in store.list() if args.all or r["state"] == "active"]
            if args.json:
                print(json.dumps(rows, indent=2))
            else:
                print(f"{'id':<14}{'role':<11}{'state':<9}{'created':<21}{'expires':<21}{'run':<24}name")
                for r in rows:
                    print(f"{r['id']:<14}{r['role']:<11}{r['state']:<9}{when(r['created_at']):<21}"
                          f"{when(r['expires_at']):<21}{(r['run_id'] or '-'):<24}{r['name']}")
            return 0
        if args.keys_action == "revoke-run":
            print(f"revoked {store.revoke_run(args.run_id)} key(s) of run {args.run_id}")
            return 0
        if store.revoke(args.key_id):
            print(f"revoked {args.key_id}")
            return 0
        print(f"error: no active key {args.key_id}")
        return 1
    finally:
        store.close()


def register(subparsers) -> None:
    """Add ``keys`` to the ``suite`` command."""
    keys = subparsers.add_parser("keys", help="API keys of every service (stored hashed)")
    kact = keys.add_subparsers(dest="keys_action", required=True)
    create = kact.add_parser("create", help="make a key; it is printed once")
    create.add_argument("--role", required=True, choices=list(ROLES))
    create.add_argument("--name", help="who or what the key is for")
    create.add_argument("--ttl", help="lifetime, e.g. 30m, 12h, 7d (default: no expiry; the security "
                                      "review fails admin keys without one)")
    create.add_argument("--run", help="the pipeline run that owns the key (revoked with `revoke-run`)")
    create.add_argument("--json", action="store_true", help="print {id, role, name, expires_at, key} as JSON")
    lst = kact.add_parser("list", help="active keys (ids, roles, expiry; never the keys)")
    lst.add_argument("--all", action="store_true", help="revoked and expired keys too")
    lst.add_argument("--json", action="store_true")
    revoke = kact.add_parser("revoke", help="revoke a key by id")
    revoke.add_argument("key_id")
    run = kact.add_parser("revoke-run", help="revoke every key a run minted")
    run.add_argument("run_id")
    keys.set_defaults(func=cmd_keys)
