"""Client-sent events (``POST /v1/sessions/{id}/events``) and the names of every event type.

Event names are contract: they are spelled once, here, and imported everywhere else.
"""

from __future__ import annotations

from typing import Annotated, Any, Final, Literal

from pydantic import Discriminator, Field, Tag, TypeAdapter, ValidationError

from hangar.errors import InvalidRequest
from hangar.wire.common import Strict, validation_message

# Server-emitted event types (API.md §2.2), named once.
STATUS_RUNNING: Final = "session.status_running"
STATUS_IDLE: Final = "session.status_idle"
STATUS_RESCHEDULED: Final = "session.status_rescheduled"
STATUS_TERMINATED: Final = "session.status_terminated"
THREAD_RUNNING: Final = "session.thread_status_running"
THREAD_IDLE: Final = "session.thread_status_idle"
THREAD_RESCHEDULED: Final = "session.thread_status_rescheduled"
THREAD_TERMINATED: Final = "session.thread_status_terminated"
SESSION_ERROR: Final = "session.error"
SESSION_UPDATED: Final = "session.updated"
SESSION_USAGE: Final = "session.usage"
SESSION_DELETED: Final = "session.deleted"
AGENT_MESSAGE: Final = "agent.message"
AGENT_THINKING: Final = "agent.thinking"
AGENT_TOOL_USE: Final = "agent.tool_use"
AGENT_TOOL_RESULT: Final = "agent.tool_result"
AGENT_CUSTOM_TOOL_USE: Final = "agent.custom_tool_use"
AGENT_MCP_TOOL_USE: Final = "agent.mcp_tool_use"
AGENT_MCP_TOOL_RESULT: Final = "agent.mcp_tool_result"
AGENT_CONTEXT_COMPACTED: Final = "agent.thread_context_compacted"
SPAN_MODEL_START: Final = "span.model_request_start"
SPAN_MODEL_END: Final = "span.model_request_end"
USER_MESSAGE: Final = "user.message"
USER_INTERRUPT: Final = "user.interrupt"
USER_TOOL_CONFIRMATION: Final = "user.tool_confirmation"
USER_CUSTOM_TOOL_RESULT: Final = "user.custom_tool_result"
USER_TOOL_RESULT: Final = "user.tool_result"
USER_DEFINE_OUTCOME: Final = "user.define_outcome"
SYSTEM_MESSAGE: Final = "system.message"

# The 41 values the `types[]` filter accepts (SDK `BetaManagedAgentsSessionEventType`).
FILTERABLE_TYPES: Final = frozenset(
    {
        "user.message", "user.interrupt", "user.tool_confirmation", "user.custom_tool_result",
        "agent.custom_tool_use", "agent.message", "agent.thinking", "agent.mcp_tool_use",
        "agent.mcp_tool_result", "agent.tool_use", "agent.tool_result", "agent.thread_message_received",
        "agent.thread_message_sent", "agent.thread_context_compacted", "session.error",
        "session.status_rescheduled", "session.status_running", "session.status_idle",
        "session.status_terminated", "session.thread_created", "span.outcome_evaluation_start",
        "span.outcome_evaluation_end", "span.model_request_start", "span.model_request_end",
        "span.outcome_evaluation_ongoing", "user.define_outcome", "session.thread_status_running",
        "session.thread_status_idle", "session.thread_status_terminated", "user.tool_result",
        "session.thread_status_rescheduled", "session.updated", "system.message", "session.usage",
        "workflow_run.created", "workflow_run.status_ended", "workflow_run.phase_started",
        "workflow_run.phase_ended", "workflow_run.status_running", "workflow_run.status_idle",
        "workflow_run.error",
    }
)  # fmt: skip

PREVIEWABLE: Final = frozenset({AGENT_MESSAGE, AGENT_THINKING})
MAX_EVENTS_PER_REQUEST: Final = 50


# --- content blocks -------------------------------------------------------------------------


class TextBlock(Strict):
    type: Literal["text"]
    text: str


class Base64Source(Strict):
    type: Literal["base64"]
    media_type: str
    data: str


class UrlSource(Strict):
    type: Literal["url"]
    url: str


class FileSource(Strict):
    type: Literal["file"]
    file_id: str


class PlainTextSource(Strict):
    type: Literal["text"]
    media_type: Literal["text/plain"] = "text/plain"
    data: str


ImageSource = Annotated[Base64Source | UrlSource | FileSource, Field(discriminator="type")]
DocumentSource = Annotated[
    Base64Source | PlainTextSource | UrlSource | FileSource, Field(discriminator="type")
]


class ImageBlock(Strict):
    type: Literal["image"]
    source: ImageSource


class DocumentBlock(Strict):
    type: Literal["document"]
    source: DocumentSource
    title: str | None = None
    context: str | None = None


class RedactedBlock(Strict):
    type: Literal["redacted"]


class Citations(Strict):
    enabled: bool = False


class SearchResultBlock(Strict):
    type: Literal["search_result"]
    source: str
    title: str
    content: list[TextBlock]
    citations: Citations | None = None


MessageContent = Annotated[
    TextBlock | ImageBlock | DocumentBlock | RedactedBlock, Field(discriminator="type")
]
ResultContent = Annotated[
    TextBlock | ImageBlock | DocumentBlock | SearchResultBlock, Field(discriminator="type")
]


# --- events ---------------------------------------------------------------------------------


class UserMessage(Strict):
    type: Literal["user.message"]
    content: Annotated[list[MessageContent], Field(min_length=1)]


class UserInterrupt(Strict):
    type: Literal["user.interrupt"]
    session_thread_id: str | None = None


class UserToolConfirmation(Strict):
    type: Literal["user.tool_confirmation"]
    tool_use_id: str
    result: Literal["allow", "deny"]
    deny_message: str | None = None
    session_thread_id: str | None = None


class UserCustomToolResult(Strict):
    type: Literal["user.custom_tool_result"]
    custom_tool_use_id: str
    content: list[ResultContent] = Field(default_factory=list)
    is_error: bool | None = None
    session_thread_id: str | None = None


class UserToolResult(Strict):
    type: Literal["user.tool_result"]
    tool_use_id: str
    content: list[ResultContent] = Field(default_factory=list)
    is_error: bool | None = None
    session_thread_id: str | None = None


class TextRubric(Strict):
    type: Literal["text"]
    content: Annotated[str, Field(max_length=262_144)]


class FileRubric(Strict):
    type: Literal["file"]
    file_id: str


class UserDefineOutcome(Strict):
    type: Literal["user.define_outcome"]
    description: str
    rubric: Annotated[TextRubric | FileRubric, Field(discriminator="type")]
    max_iterations: Annotated[int, Field(ge=1, le=20)] | None = None


class SystemText(Strict):
    type: Literal["text"]
    text: str


class SystemMessage(Strict):
    type: Literal["system.message"]
    content: Annotated[list[SystemText], Field(min_length=1, max_length=1000)]


def _event_tag(value: Any) -> str | None:
    if isinstance(value, dict):
        tag = value.get("type")
        return tag if isinstance(tag, str) else None
    return None


EventParam = Annotated[
    Annotated[UserMessage, Tag("user.message")]
    | Annotated[UserInterrupt, Tag("user.interrupt")]
    | Annotated[UserToolConfirmation, Tag("user.tool_confirmation")]
    | Annotated[UserCustomToolResult, Tag("user.custom_tool_result")]
    | Annotated[UserToolResult, Tag("user.tool_result")]
    | Annotated[UserDefineOutcome, Tag("user.define_outcome")]
    | Annotated[SystemMessage, Tag("system.message")],
    Discriminator(_event_tag),
]
_event_adapter: TypeAdapter[EventParam] = TypeAdapter(EventParam)
CLIENT_TYPES: Final = (
    "user.message", "user.interrupt", "user.tool_confirmation", "user.custom_tool_result",
    "user.tool_result", "user.define_outcome", "system.message",
)  # fmt: skip


def parse_event(raw: Any, path: str) -> EventParam:
    """Validate one client event; errors name the JSON path (``events[0].content[1].text``)."""
    if not isinstance(raw, dict):
        raise InvalidRequest(f"{path}: expected an object")
    kind = raw.get("type")
    if kind not in CLIENT_TYPES:
        shown = f'"{kind}"' if isinstance(kind, str) else repr(kind)
        raise InvalidRequest(
            f"{path}.type: {shown} is not a valid value; expected one of {', '.join(CLIENT_TYPES)}"
        )
    try:
        return _event_adapter.validate_python(raw)
    except ValidationError as exc:
        raise InvalidRequest(validation_message(exc, prefix=path + ".", data=raw)) from exc


def event_body(event: EventParam) -> dict[str, Any]:
    """The stored body of a client event (everything but ``type``)."""
    body = event.model_dump(mode="json", exclude_none=True)
    body.pop("type", None)
    return body
