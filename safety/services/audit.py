"""The audit log: every operator action, whichever surface it came from."""

from __future__ import annotations

import logging
from typing import Any

from safety.models import AuditEvent

logger = logging.getLogger(__name__)


def audit_record(*, actor: str, action: str, target: str = "", details: dict[str, Any] | None = None,
                 source: str = "") -> AuditEvent:
    event = AuditEvent.objects.create(actor=actor, action=action, target=target, details=details or {}, source=source)
    logger.info("audit: %s %s %s", actor, action, target, extra={"audit_id": event.pk, "source": source})
    return event
