"""Small pieces of the Bot Framework activity both the bot (bot.py) and its activity handler (handler.py) use."""

from __future__ import annotations

import re
from typing import Any

from botbuilder.core import InvokeResponse

# The activity of a message in a channel thread carries ";messageid=..." after the channel's conversation id.
_THREAD_SUFFIX_RE = re.compile(r";messageid=\d+$")


def channel_conversation_id(conversation_id: str) -> str:
    """A channel's own conversation id from a thread's (19:...@thread.tacv2;messageid=123 -> 19:...@thread.tacv2)."""
    return _THREAD_SUFFIX_RE.sub("", conversation_id)


def invoke_response(body: Any, status: int = 200) -> Any:
    """An InvokeResponse the adapter writes back as the HTTP answer to an invoke."""
    return InvokeResponse(status=status, body=body)
