"""Approvals: the pending-workflow state machine, its ack tokens, escalation, expiry and resume.

Surfaces (Slack, Teams, the web ack page, the HTTP API) call one `ApprovalService` (`runtime.approvals`):
`decide(token=..., actor=...)` for a click, `decide_by_id(...)` for a typed command, `list_pending_for(...)`
for a "pending" list; each answers a `DecisionResult`.
"""

from core.approvals.buttons import CHOICE_LABELS
from core.approvals.callback import CALLBACK_CHANNEL, CallbackChannel
from core.approvals.directory import Directory
from core.approvals.keys import KeyManager, KeyOperationError
from core.approvals.models import (
    ApprovalInputError,
    ApprovalRequest,
    ApprovalView,
    DecisionReason,
    DecisionResult,
)
from core.approvals.service import ApprovalService, Preview
from core.approvals.targets import TargetPlan

__all__ = [
    "CALLBACK_CHANNEL",
    "CHOICE_LABELS",
    "ApprovalInputError",
    "ApprovalRequest",
    "ApprovalService",
    "ApprovalView",
    "CallbackChannel",
    "DecisionReason",
    "DecisionResult",
    "Directory",
    "KeyManager",
    "KeyOperationError",
    "Preview",
    "TargetPlan",
]
