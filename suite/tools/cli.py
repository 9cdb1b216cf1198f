"""``suite approvals ...``: operate on the tool server's security database directly.

The CLI runs on the machine that holds the data dir, so it needs no API key (like ``sqlite3``
would not). An approval decided here is executed by the running tools service within
``settings.tools.approval_poll_s``; ``approve --wait`` waits for the result.
"""

from __future__ import annotations

import getpass
import json
import time
import unicodedata

from suite.auth.cli import when as _when
from suite.settings import Settings
from suite.tools.approvals import EXECUTED, FAILED, PENDING, STATUSES, ApprovalError
from suite.tools.audit import AuditRecord, args_digest
from suite.tools.stores import open_stores


def format_arguments(arguments: dict, width: int = 100, indent: str = "    ") -> str:
    """Every argument in full, one per line; a long value is folded over several lines, never cut
    (an admin approves what they see: a path of 300 characters shows all 300). Values are JSON, and
    control and format characters (newlines, terminal escapes, right-to-left overrides) are shown
    escaped, so what is on the screen is what will run."""
    lines = [f"{indent}arguments:"]
    for name, value in arguments.items():
        text = "".join(c if not unicodedata.category(c).startswith("C") else f"\\u{ord(c):04x}"
                       for c in json.dumps(value, ensure_ascii=False))
        head = f"{indent}  {name} = "
        pad = " " * len(head)
        for start in range(0, max(len(text), 1), width):
            lines.append((head if start == 0 else pad) + text[start:start + width])
    return "\n".join(lines)


def _requester_valid(stores, rec: dict) -> None:
    """An approval dies with its requester's key (cancelled, never run)."""
    if rec["status"] == PENDING and not stores.keys.is_active(rec["requested_by"]):
        message = f"the key {rec['requested_by']} that requested {rec['id']} was revoked or expired; cancelled"
        stores.approvals.cancel(rec["id"], message)
        raise ApprovalError(409, message, "requester_key_revoked")


def cmd_approvals(settings: Settings, args) -> int:
    stores = open_stores(settings)
    try:
        stores.approvals.expire()
        if args.approvals_action == "list":
            rows = stores.approvals.list(None if args.all else (args.status or "pending"))
            if args.json:
                print(json.dumps(rows, indent=2, default=str))
                return 0
            if not rows:
                print("no approval requests" + ("" if args.all else f" with status {args.status or 'pending'}"))
            for r in rows:
                print(f"{r['id']}  {r['status']:<10} {r['tool']:<12} by {r['requested_by']} ({r['requester_role']})"
                      f"  created {_when(r['created_at'])}  expires {_when(r['expires_at'])}")
                print(format_arguments(r["arguments"]))
            return 0
        approve = args.approvals_action == "approve"
        operator = f"cli:{getpass.getuser()}"
        try:
            if approve:
                _requester_valid(stores, stores.approvals.get(args.approval_id))
            rec = stores.approvals.decide(args.approval_id, approve, operator, args.reason or "")
        except ApprovalError as exc:
            print(f"error: {exc.message}")
            return 1
        stores.audit.write(AuditRecord(
            transport="cli", tool="approvals.approve" if approve else "approvals.deny", decision="allowed",
            outcome="success", status=200, key_id=operator, role="operator",
            args_sha256=args_digest({"approval_id": args.approval_id}), approval_id=args.approval_id,
            detail=args.reason or ""))
        if not approve:
            print(f"denied {rec['id']} ({rec['tool']})")
            return 0
        print(f"approved {rec['id']} ({rec['tool']}); the tools service runs it")
        deadline = time.monotonic() + args.wait
        while time.monotonic() < deadline:
            rec = stores.approvals.get(args.approval_id)
            if rec["status"] in (EXECUTED, FAILED):
                print(f"{rec['status']}: {json.dumps(rec['result'], default=str)[:2000]}")
                return 0 if rec["status"] == EXECUTED else 1
            time.sleep(0.2)
        if args.wait:
            print(f"not executed within {args.wait:g}s (is the tools service running? `suite status`)")
        return 0
    finally:
        stores.close()


def register(subparsers) -> None:
    """Add ``approvals`` to the ``suite`` command."""
    appr = subparsers.add_parser("approvals", help="pending destructive tool calls")
    aact = appr.add_subparsers(dest="approvals_action", required=True)
    al = aact.add_parser("list", help="pending requests (or --status / --all)")
    al.add_argument("--status", choices=list(STATUSES))
    al.add_argument("--all", action="store_true")
    al.add_argument("--json", action="store_true")
    for action in ("approve", "deny"):
        a = aact.add_parser(action, help=f"{action} a pending request")
        a.add_argument("approval_id")
        a.add_argument("--reason", default="")
        if action == "approve":
            a.add_argument("--wait", type=float, default=10.0, help="seconds to wait for the result (0: none)")
        else:
            a.set_defaults(wait=0.0)
    appr.set_defaults(func=cmd_approvals)

