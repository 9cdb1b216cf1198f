"""Open the tool server's stores: approvals and audit in the security database, and the suite's key
store (suite.auth) to check that a request's requester still holds a valid key."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from suite.auth.db import SYNCHRONOUS, Database
from suite.auth.keys import KeyStore
from suite.settings import Settings
from suite.tools.approvals import ApprovalStore
from suite.tools.audit import AuditLog


def security_db_path(settings: Settings) -> Path:
    return settings.security_db_path


@dataclass
class Stores:
    db: Database
    keys: KeyStore
    approvals: ApprovalStore
    audit: AuditLog

    def close(self) -> None:
        self.db.close()
        self.keys.close()


def open_stores(settings: Settings) -> Stores:
    db = Database(security_db_path(settings), synchronous=SYNCHRONOUS["security"])
    return Stores(db, KeyStore.open(settings.key_store_path),
                  ApprovalStore(db, settings.tools.approval_ttl_s, settings.tools.approved_ttl_s), AuditLog(db))
