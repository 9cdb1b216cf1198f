"""Open the security database and its stores (shared by the service and the CLI)."""

from __future__ import annotations

from dataclasses import dataclass

from suite.settings import Settings
from suite.tools.approvals import ApprovalStore
from suite.tools.audit import AuditLog
from suite.tools.db import Database, security_db_path
from suite.tools.keys import KeyStore


@dataclass
class Stores:
    db: Database
    keys: KeyStore
    approvals: ApprovalStore
    audit: AuditLog

    def close(self) -> None:
        self.db.close()


def open_stores(settings: Settings) -> Stores:
    db = Database(security_db_path(settings))
    return Stores(db, KeyStore(db), ApprovalStore(db, settings.tools.approval_ttl_s, settings.tools.approved_ttl_s),
                  AuditLog(db))
