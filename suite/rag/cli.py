"""``suite rag status`` and ``suite rag migrate``: the vector store seen from the machine that holds it.

Both open the store directly (no service, no key), so they need the rag service stopped when the store
is embedded (one owner at a time); ``status`` says so instead of failing when it is running.
"""

from __future__ import annotations

import json

from suite.settings import Settings

# the vector-store code (qdrant-client) is imported by the commands, not when `suite` builds its parser


def _say(message: str) -> None:
    print(message, flush=True)


def cmd_status(settings: Settings, args) -> int:
    from suite.vectorstore import StoreUnavailable, open_store
    from suite.vectorstore.select import find_local_store

    chosen = settings.vector_store()
    out: dict = {"store": chosen}
    legacy = find_local_store(settings.local_store_path) if chosen["kind"] == "edge" else None
    if legacy is not None:
        out["local_store"] = {"path": str(legacy.path), "collections": legacy.collections,
                              "migrated": legacy.migrated, "notice": legacy.notice()}
    try:
        store = open_store(settings)
    except StoreUnavailable as exc:
        out["collections"] = None
        out["detail"] = f"{exc} (while the rag service runs, GET /collections on it shows the same)"
    else:
        try:
            out["collections"] = [c.to_dict() for c in store.collections()]
        finally:
            store.close()
    if args.json:
        print(json.dumps(out, indent=2, ensure_ascii=False))
        return 0
    _say(f"vector store: {chosen['kind']} at {chosen['location']}")
    if out.get("detail"):
        _say(out["detail"])
    for c in out.get("collections") or []:
        index = c.get("index") or {}
        state = f", HNSW {index['hnsw']} ({index['points_since_optimize']} points since optimize)" if index else ""
        _say(f"  {c['name']:<24} {c['points']:>8} points, {c['dimension']} dims{state}")
    if legacy is not None:
        _say(("note: " if legacy.migrated else "WARNING: ") + legacy.notice())
    return 0


def cmd_migrate(settings: Settings, args) -> int:
    from suite.vectorstore import StoreUnavailable
    from suite.vectorstore.migrate import migrate_local_to_edge

    say = (lambda _m: None) if args.json else _say  # --json: the report alone on stdout
    if settings.rag.qdrant_url:
        _say("error: rag.qdrant_url is set (server store): migration copies the embedded local store into "
             "the embedded edge store")
        return 2
    source, target = settings.local_store_path, settings.edge_store_path
    say(f"migrating the qdrant-client local store {source} -> edge store {target}")
    try:
        report = migrate_local_to_edge(source, target, optimize_threshold=settings.rag.optimize_threshold,
                                       optimize_threads=settings.rag.optimize_threads, replace=args.replace,
                                       progress=say)
    except StoreUnavailable as exc:
        _say(f"error: {exc}")
        return 2
    if args.json:
        print(json.dumps(report.to_dict(), indent=2, ensure_ascii=False))
    elif report.detail:
        say(report.detail)
    if not report.ok:
        say("migration FAILED for: " + ", ".join(f"{c.name} ({c.detail})" for c in report.collections if not c.ok)
            + "; the local store is unchanged")
        return 1
    if settings.rag.store != "edge":
        say("note: rag.store is 'local'; set SUITE_RAG__STORE=edge (the default) to serve from the edge store")
    say("done; the local store is kept, unchanged, as a fallback")
    return 0


def register(sub) -> None:
    rag = sub.add_parser("rag", help="the RAG vector store: status, migrate the local store to edge")
    actions = rag.add_subparsers(dest="rag_action", required=True)
    st = actions.add_parser("status", help="store kind, collections, HNSW index state, a local store left behind")
    st.add_argument("--json", action="store_true")
    st.set_defaults(func=cmd_status)
    mg = actions.add_parser("migrate", help="copy the qdrant-client local store into the edge store "
                                            "(stop the rag service first); verifies counts and rankings")
    mg.add_argument("--replace", action="store_true", help="overwrite collections the edge store already has")
    mg.add_argument("--json", action="store_true")
    mg.set_defaults(func=cmd_migrate)
