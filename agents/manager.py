"""The meta-memory manager: which memory type an event becomes, and which agent gets it.

Classification is deterministic: an ordered list of rules, the first that matches wins
(the table is in ``docs/memory-pipeline.md``; ``MemoryWork.rule`` names the rule used):

1. ``sensor_data``, ``api_call``, ``log_entry``, ``memory_update``: no memory (telemetry
   feeds the stream processor only).
2. ``agent_action``: procedural.
3. ``realtime_message``: working (session context).
4. An explicit kind: ``metadata.kind`` (``payload.context.kind`` for interactions) or an
   ``app_event``'s ``event_type``: ``profile``/``persona`` -> core, ``fact``/``preference``
   -> semantic.
5. A user's chat message stating a profile fact ("my name is", "call me", "I am a <role>",
   "I work as", "I live in", "I'm N years old", "my pronouns are") -> core; stating a fact
   or preference ("I like/love/prefer/hate", "I don't like", "my favourite X is", "I am
   <something>", "I always/usually/never", "I have a", "I work at", "my birthday is") ->
   semantic. Only ``role == "user"`` messages are read; questions are not statements.
6. A MemoryItem that declares another memory type than episodic: that type.
7. An event with a session id and importance below ``working_max_importance``: working.
8. Anything else (chat messages, interactions, app events): episodic.

Text matching is English-only and pattern based: it catches plain first-person
statements, not paraphrases.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from agents.config import MEMORY_TYPES, MemoryType, PipelineConfig
from agents.events import as_text, type_of
from agents.work import MemoryWork, Source
from gateway.schemas.envelope import Envelope
from gateway.schemas.payloads import (
    AgentAction,
    AppEvent,
    ChatMessage,
    MemoryItem,
    RealtimeMessage,
    UserInteraction,
)

TELEMETRY = frozenset({"sensor_data", "api_call", "log_entry", "memory_update"})
_KINDS: dict[str, MemoryType] = {
    "profile": "core",
    "persona": "core",
    "fact": "semantic",
    "preference": "semantic",
}


class Unclassifiable(ValueError):
    """The event cannot become a memory (for example it names no organization or user)."""


_END = r"(?P<value>[^.,;!?\n]{1,200})"
_PROFILE: tuple[tuple[str, re.Pattern[str]], ...] = tuple(
    (subject, re.compile(pattern, re.IGNORECASE))
    for subject, pattern in (
        ("name", r"\bmy name is\s+" + _END),
        ("name", r"\b(?:call me|i go by)\s+" + _END),
        ("pronouns", r"\bmy pronouns are\s+" + _END),
        ("age", r"\bi(?:'m| am)\s+(?P<value>\d{1,3})\s+years?\s+old\b"),
        ("location", r"\bi live in\s+" + _END),
        ("role", r"\bi work as\s+(?:an?\s+)?" + _END),
        (
            "role",
            r"\bi(?:'m| am)\s+an?\s+(?!(?:bit|little|lot|fan|big|huge|few)\b)" + _END,
        ),
    )
)
_FAVOURITE = re.compile(
    r"\bmy\s+fav(?:ou?rite|e)\s+(?P<slot>[^\W\d_]+(?:\s[^\W\d_]+)?)\s+(?:is|are)\s+" + _END,
    re.IGNORECASE,
)
_PERSONAL_SLOT = re.compile(
    r"\bmy\s+(?P<slot>birthday|email(?:\s+address)?|phone(?:\s+number)?|address|"
    r"(?:wife|husband|partner|son|daughter|dog|cat)(?:'s\s+name)?)\s+(?:is|are)\s+" + _END,
    re.IGNORECASE,
)
_FACTS = tuple(
    re.compile(pattern, re.IGNORECASE)
    for pattern in (
        r"\bi\s+(?:really\s+|do\s+|also\s+|just\s+)?(?:like|love|enjoy|prefer|adore|hate|"
        r"dislike|can't\s+stand|cannot\s+stand)\b",
        r"\bi\s+(?:don't|do\s+not|never)\s+(?:like|love|eat|drink|want|enjoy|use)\b",
        r"\bi\s+(?:always|usually|often|never|rarely)\s+\w+",
        r"\bi(?:'m| am)\s+(?:a\s+)?(?:big\s+|huge\s+)?fan\s+of\b",
        r"\bi(?:'m| am)\s+(?!an?\s)(?!(?:sure|not|sorry|here|back|fine|ok|okay|good|great|"
        r"glad|done|ready|just|so|very|going|trying|looking|thinking|wondering)\b)"
        r"(?![a-z]+ing\b)[a-z]+",
        r"\bi\s+have\s+(?:a|an|two|three|four|\d+)\s+(?!(?:question|problem|issue|idea|"
        r"minute|moment|meeting|call)\b)\w+",
        r"\bi\s+work\s+(?:at|for|in)\b",
    )
)
_SENTENCES = re.compile(r"(?<=[.!?])\s+|\n+")
_FIRST_PERSON = re.compile(r"\b(?:i|my|call\s+me)\b", re.IGNORECASE)
"""Every profile and fact pattern needs one of these words: a text without any is not
split into sentences and matched pattern by pattern (most messages are not statements
about the speaker)."""


def _sentences(text: str) -> list[str]:
    text = text.replace("\u2019", "'")
    return [s.strip() for s in _SENTENCES.split(text) if s.strip()]


def profile_statement(text: str) -> tuple[str, str, str] | None:
    """``(subject, value, sentence)`` of the first profile statement in ``text``."""
    if not _FIRST_PERSON.search(text):
        return None
    for sentence in _sentences(text):
        if sentence.endswith("?"):
            continue
        for subject, pattern in _PROFILE:
            match = pattern.search(sentence)
            if match:
                return subject, match["value"].strip(), sentence
    return None


def fact_statement(text: str) -> tuple[str | None, str] | None:
    """``(subject or None, sentence)`` of the first fact or preference in ``text``."""
    if not _FIRST_PERSON.search(text):
        return None
    for sentence in _sentences(text):
        if sentence.endswith("?"):
            continue
        for slotted in (_FAVOURITE, _PERSONAL_SLOT):
            match = slotted.search(sentence)
            if match:
                slot = " ".join(match["slot"].lower().split())
                prefix = "favourite " if slotted is _FAVOURITE else ""
                return prefix + slot, sentence
        if any(pattern.search(sentence) for pattern in _FACTS):
            return None, sentence
    return None


class MetaMemoryManager:
    """Classifies events (``classify``) into ``MemoryWork`` for one of the five agents."""

    def __init__(self, config: PipelineConfig) -> None:
        self.config = config

    def classify(
        self, event: Envelope | MemoryItem, source: Source, record_timestamp: int
    ) -> MemoryWork | None:
        """The work for ``event`` or ``None`` when it does not become a memory.

        Raises ``Unclassifiable`` when it names no organization or user."""
        kind = type_of(event)
        if kind in TELEMETRY:
            return None
        # The envelope's tenancy only: the gateway stamps it from the caller's token, while a
        # payload's own user_id (user_interaction) is not checked and must not pick the user.
        org, user = event.organization_id, event.user_id
        payload: Any = event if isinstance(event, MemoryItem) else event.payload
        if not org or not user:
            raise Unclassifiable(
                f"the {kind} event at {source} names no organization_id or user_id; events "
                "published through the gateway always carry both"
            )
        timestamp = event.timestamp if event.timestamp is not None else record_timestamp
        if isinstance(payload, UserInteraction) and payload.timestamp is not None:
            timestamp = payload.timestamp
        base: dict[str, Any] = {
            "source": source,
            "organization_id": org,
            "user_id": user,
            "importance": float(payload.importance),
            "timestamp": int(timestamp),
            "event_type": kind,
            "event_id": None if isinstance(event, MemoryItem) else event.id,
        }
        if isinstance(payload, AgentAction):
            return self._agent_action(payload, base)
        if isinstance(payload, RealtimeMessage):
            content = f"{payload.channel}: {as_text(payload.data)}"
            ttl = payload.data.get("ttl_s") if isinstance(payload.data, dict) else None
            return MemoryWork(
                memory_type="working",
                rule="3 realtime message",
                content=content,
                session_id=_session(payload.data if isinstance(payload.data, dict) else {}),
                metadata={"channel": payload.channel, "priority": payload.priority},
                ttl_s=float(ttl) if isinstance(ttl, int | float) and ttl > 0 else None,
                **base,
            )
        if isinstance(payload, ChatMessage):
            return self._chat(payload, base)
        if isinstance(payload, AppEvent):
            return self._app_event(payload, base)
        if isinstance(payload, UserInteraction):
            return self._generic(
                payload.action,
                {"context": payload.context} if payload.context else {},
                _session(payload.context),
                payload.context.get("kind"),
                None,
                None,
                base,
            )
        if isinstance(payload, MemoryItem):
            context = payload.metadata.get("context")
            session = payload.session_id or _session(context if isinstance(context, dict) else {})
            kind_hint = payload.metadata.get("kind")
            if kind_hint is None and isinstance(context, dict):
                kind_hint = context.get("kind")
            base["event_id"] = payload.metadata.get("source_event_id")
            if isinstance(payload.metadata.get("source_event_type"), str):
                base["event_type"] = payload.metadata["source_event_type"]
            if payload.timestamp is not None:
                base["timestamp"] = payload.timestamp
            return self._generic(
                payload.content,
                dict(payload.metadata),
                session,
                kind_hint,
                payload.memory_type,
                payload.agent_id,
                base,
            )
        return None

    # -- per type ---------------------------------------------------------------------------

    def _agent_action(self, action: AgentAction, base: dict[str, Any]) -> MemoryWork:
        result = "" if action.result is None else f" -> {as_text(action.result, 500)}"
        status = "" if action.success else " (failed)"
        return MemoryWork(
            memory_type="procedural",
            rule="2 agent action",
            content=f"{action.action}{status}{result}",
            agent_id=action.agent_id,
            session_id=action.session_id,
            metadata={"parameters": action.parameters} if action.parameters else {},
            action=action.action,
            step=action.step,
            success=action.success,
            **base,
        )

    def _chat(self, chat: ChatMessage, base: dict[str, Any]) -> MemoryWork:
        metadata: dict[str, Any] = {"conversation_id": chat.conversation_id, "role": chat.role}
        if chat.metadata:
            metadata["metadata"] = chat.metadata
        session = _session(chat.metadata) or None
        explicit = _kind(chat.metadata.get("kind"))
        common = {"agent_id": chat.agent_id, "session_id": session, **base}
        if explicit is not None:
            block = "persona" if chat.metadata.get("kind") == "persona" else "human"
            return MemoryWork(
                memory_type=explicit,
                rule=f"4 metadata.kind={chat.metadata.get('kind')}",
                content=chat.content,
                metadata=metadata,
                subject=_str(chat.metadata.get("subject")),
                block=block if explicit == "core" else None,
                **common,
            )
        if chat.role == "user":
            profile = profile_statement(chat.content)
            if profile is not None:
                subject, value, sentence = profile
                return MemoryWork(
                    memory_type="core",
                    rule=f"5 profile statement ({subject})",
                    content=f"{subject}: {value}",
                    metadata={**metadata, "statement": sentence},
                    subject=subject,
                    block="human",
                    **common,
                )
            fact = fact_statement(chat.content)
            if fact is not None:
                slot, sentence = fact
                if sentence != chat.content:
                    metadata["message"] = as_text(chat.content, 1_000)
                return MemoryWork(
                    memory_type="semantic",
                    rule="5 fact statement",
                    content=sentence,
                    metadata=metadata,
                    subject=slot,
                    **common,
                )
        if session and base["importance"] < self.config.working_max_importance:
            return MemoryWork(
                memory_type="working",
                rule="7 low-importance session event",
                content=chat.content,
                metadata=metadata,
                **common,
            )
        return MemoryWork(
            memory_type="episodic",
            rule="8 chat message",
            content=chat.content,
            metadata=metadata,
            **common,
        )

    def _app_event(self, app: AppEvent, base: dict[str, Any]) -> MemoryWork:
        body = app.payload
        metadata: dict[str, Any] = {"event_type": app.event_type, "source": app.source}
        if body:
            metadata["payload"] = body
        explicit = _kind(app.event_type) or _kind(body.get("kind"))
        subject = _str(body.get("subject")) or _str(body.get("key"))
        statement = next(
            (
                _str(body.get(k))
                for k in ("statement", "content", "text", "fact", "value")
                if _str(body.get(k))
            ),
            None,
        )
        if explicit is not None:
            if statement is None:
                fields = {k: v for k, v in body.items() if k not in ("kind", "subject", "key")}
                statement = "; ".join(f"{k}: {as_text(v, 500)}" for k, v in fields.items())
            if explicit == "core" and subject and statement and ":" not in statement:
                statement = f"{subject}: {statement}"
            kind_name = app.event_type if _kind(app.event_type) else body.get("kind")
            block = _str(body.get("block")) or ("persona" if kind_name == "persona" else "human")
            return MemoryWork(
                memory_type=explicit,
                rule=f"4 app_event {kind_name}",
                content=statement or app.event_type,
                agent_id=_str(body.get("agent_id")),
                session_id=_session(body),
                metadata=metadata,
                subject=subject,
                block=block if explicit == "core" else None,
                **base,
            )
        text = f"{app.event_type} from {app.source}"
        if statement:
            text += f": {statement}"
        return self._generic(
            text, metadata, _session(body), None, None, _str(body.get("agent_id")), base
        )

    def _generic(
        self,
        content: str,
        metadata: dict[str, Any],
        session: str | None,
        kind_hint: object,
        declared: str | None,
        agent_id: str | None,
        base: dict[str, Any],
    ) -> MemoryWork:
        explicit = _kind(kind_hint)
        if explicit is not None:
            return MemoryWork(
                memory_type=explicit,
                rule=f"4 kind={kind_hint}",
                content=content,
                agent_id=agent_id,
                session_id=session,
                metadata=metadata,
                subject=_str(metadata.get("subject")),
                block=("persona" if kind_hint == "persona" else "human")
                if explicit == "core"
                else None,
                **base,
            )
        memory_type = _memory_type(declared)
        if memory_type is not None and memory_type != "episodic":
            return MemoryWork(
                memory_type=memory_type,
                rule=f"6 declared {declared}",
                content=content,
                agent_id=agent_id,
                session_id=session,
                metadata=metadata,
                subject=_str(metadata.get("subject")),
                block="human" if memory_type == "core" else None,
                action=content if memory_type == "procedural" else None,
                **base,
            )
        if session and base["importance"] < self.config.working_max_importance:
            return MemoryWork(
                memory_type="working",
                rule="7 low-importance session event",
                content=content,
                agent_id=agent_id,
                session_id=session,
                metadata=metadata,
                **base,
            )
        return MemoryWork(
            memory_type="episodic",
            rule=f"8 {base['event_type']}",
            content=content,
            agent_id=agent_id,
            session_id=session,
            metadata=metadata,
            **base,
        )


def _memory_type(value: object) -> MemoryType | None:
    for memory_type in MEMORY_TYPES:
        if value == memory_type:
            return memory_type
    return None


def _kind(value: object) -> MemoryType | None:
    return _KINDS.get(value.lower()) if isinstance(value, str) else None


def _str(value: object) -> str | None:
    return value.strip() or None if isinstance(value, str) else None


def _session(fields: Mapping[str, Any]) -> str | None:
    value = fields.get("session_id")
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return _str(value)
