"""Talking to an agent: conversations whose history is kept and trimmed to the model's context window."""
from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from flask import Response, current_app
from sqlalchemy.exc import IntegrityError

from app import llm
from app.errors import NotFound
from app.extensions import db
from app.http import Page, paginate
from app.ids import new_id, utcnow
from app.security import Principal
from app.sse import format_event

from . import generation, prompting, service
from .models import Agent, Conversation, ConversationMessage

log = logging.getLogger("lunaos.agents")
TITLE_LENGTH = 80


def _owned(owner_id: str, conversation_id: str) -> Conversation:
    conversation = db.session.get(Conversation, conversation_id)
    if conversation is None or conversation.owner_id != owner_id:
        raise NotFound("No such conversation.")
    return conversation


def get(owner_id: str, conversation_id: str) -> Conversation:
    return _owned(owner_id, conversation_id)


def list_for_agent(owner_id: str, agent_ref: str, page: int, per_page: int) -> Page:
    agent = service.usable(owner_id, agent_ref)
    statement = (sa.select(Conversation)
                 .where(Conversation.owner_id == owner_id, Conversation.agent_id == agent.id)
                 .order_by(Conversation.updated_at.desc(), Conversation.id.desc()))
    return paginate(statement, page, per_page)


def list_messages(owner_id: str, conversation_id: str, page: int, per_page: int) -> Page:
    conversation = _owned(owner_id, conversation_id)
    statement = (sa.select(ConversationMessage)
                 .where(ConversationMessage.conversation_id == conversation.id)
                 .order_by(ConversationMessage.position))
    return paginate(statement, page, per_page)


def delete(owner_id: str, conversation_id: str) -> None:
    db.session.delete(_owned(owner_id, conversation_id))
    db.session.commit()


@dataclass
class Turn:
    """One message about to be answered: everything decided before the model is called."""

    principal: Principal
    agent: Agent
    conversation: Conversation | None
    conversation_id: str
    text: str
    settings: dict[str, Any]
    fitted: prompting.Fitted

    @property
    def request(self) -> llm.ChatRequest:
        return llm.ChatRequest(messages=self.fitted.messages, model=self.settings["model"],
                               temperature=self.settings["temperature"], max_tokens=self.fitted.max_tokens,
                               user=self.principal.user_id)

    @property
    def history(self) -> dict[str, int]:
        return {"included": self.fitted.included, "dropped": self.fitted.dropped}


def prepare(principal: Principal, agent_ref: str, body: dict[str, Any]) -> Turn:
    owner_id = principal.user_id
    agent = service.usable(owner_id, agent_ref)
    conversation = None
    history: list[tuple[str, str, int]] = []
    if body.get("conversation_id"):
        conversation = db.session.get(Conversation, body["conversation_id"])
        if conversation is None or conversation.owner_id != owner_id or conversation.agent_id != agent.id:
            raise NotFound("No such conversation with this agent.")
        limit = int(current_app.config["AGENTS_HISTORY_MAX_MESSAGES"])
        rows = db.session.execute(
            sa.select(ConversationMessage.role, ConversationMessage.content, ConversationMessage.tokens)
            .where(ConversationMessage.conversation_id == conversation.id)
            .order_by(ConversationMessage.position.desc()).limit(limit)).all()
        history = [(r.role, r.content, r.tokens) for r in reversed(rows)]
    settings = service.settings(agent, body, int(current_app.config["AGENTS_MAX_TOKENS"]))
    fitted = prompting.fit(prompting.system_prompt(agent), history, body["text"], model=settings["model"],
                           max_tokens=settings["max_tokens"])
    return Turn(principal, agent, conversation, conversation.id if conversation else new_id("cnv"), body["text"],
                settings, fitted)


def reply(turn: Turn) -> dict[str, Any]:
    """Answer at once (JSON)."""
    result = llm.chat(turn.request)
    generation.record(turn.principal.user_id, turn.principal.key_id, result.provider, result.model, result.usage)
    message = _store(turn, result.content, result.usage, result.model, result.provider, result.finish_reason)
    return _result(turn, message, result.content, result.usage, result.model, result.provider, result.finish_reason)


def reply_stream(turn: Turn) -> Response:
    """Answer as server-sent events. The model is called here, so a failure before the first token
    is raised (and answered with the error envelope) rather than streamed."""
    chat = llm.stream(turn.request)
    model = chat.model or turn.settings["model"] or ""
    app = current_app._get_current_object()  # type: ignore[attr-defined]

    def body() -> Iterator[str]:
        with app.app_context():
            yield format_event({"conversation_id": turn.conversation_id}, event="start")
            parts: list[str] = []
            usage: llm.Usage | None = None
            finish, error, complete = "stop", None, False
            try:
                for chunk in chat:
                    if chunk.delta:
                        parts.append(chunk.delta)
                        yield format_event({"delta": chunk.delta}, event="token")
                    usage = chunk.usage or usage
                    finish = chunk.finish_reason or finish
                complete = True
            except llm.ProviderError as failure:
                error = {"code": "LLM_UPSTREAM_ERROR", "message": f"The model failed mid-answer: {failure}"}
            finally:
                text = "".join(parts)
                if not complete and error is None:
                    chat.close()  # the client left: stop generating, keep what it was shown
                    finish = "interrupted"
                spent = usage or _estimate(turn, text, model)
                generation.record(turn.principal.user_id, turn.principal.key_id, chat.provider, model, spent)
                message = _store(turn, text, spent, model, chat.provider, finish) if error is None else None
            if error is not None:
                yield format_event(error, event="error")
                return
            yield format_event(_result(turn, message, text, spent, model, chat.provider, finish), event="done")

    response = Response(body(), mimetype="text/event-stream")
    response.headers["Cache-Control"] = "no-cache"
    response.headers["X-Accel-Buffering"] = "no"
    return response


def _estimate(turn: Turn, text: str, model: str | None) -> llm.Usage:
    return llm.Usage(prompt_tokens=turn.fitted.prompt_tokens, completion_tokens=llm.count_tokens(text, model),
                     estimated=True)


def _result(turn: Turn, message: ConversationMessage | None, text: str, usage: llm.Usage, model: str,
            provider: str, finish: str) -> dict[str, Any]:
    return {"response": text, "conversation_id": turn.conversation_id, "message_id": message.id if message else "",
            "usage": usage.as_dict(), "model": model, "provider": provider, "finish_reason": finish,
            "history": turn.history}


def _store(turn: Turn, answer: str, usage: llm.Usage, model: str, provider: str,
           finish: str) -> ConversationMessage | None:
    """Append the question and the answer, together (a failed call leaves no half turn)."""
    for attempt in range(3):  # positions race with a concurrent message on the same conversation
        try:
            return _append(turn, answer, usage, model, provider, finish)
        except IntegrityError:
            db.session.rollback()
            if attempt == 2:
                log.warning("conversation %s: could not store a turn", turn.conversation_id)
    return None


def _append(turn: Turn, answer: str, usage: llm.Usage, model: str, provider: str,
            finish: str) -> ConversationMessage | None:
    conversation = db.session.get(Conversation, turn.conversation_id, populate_existing=True)
    now = utcnow()
    if conversation is None:
        if turn.conversation is not None:
            log.info("conversation %s was deleted while answering; the turn is not kept", turn.conversation_id)
            return None
        title = turn.text.strip().splitlines()[0][:TITLE_LENGTH] if turn.text.strip() else ""
        conversation = Conversation(id=turn.conversation_id, owner_id=turn.principal.user_id,
                                    agent_id=turn.agent.id, title=title, message_count=0, created_at=now)
        db.session.add(conversation)
        db.session.flush()
    last = db.session.scalar(sa.select(sa.func.max(ConversationMessage.position))
                             .where(ConversationMessage.conversation_id == conversation.id))
    position = 0 if last is None else last + 1
    question = ConversationMessage(conversation_id=conversation.id, position=position, role="user",
                                   content=turn.text, tokens=llm.count_tokens(turn.text, model), created_at=now)
    answer_row = ConversationMessage(conversation_id=conversation.id, position=position + 1, role="assistant",
                                     content=answer, tokens=llm.count_tokens(answer, model), model=model,
                                     provider=provider, usage=usage.as_dict(), finish_reason=finish, created_at=now)
    db.session.add_all([question, answer_row])
    conversation.message_count = position + 2
    conversation.updated_at = now
    db.session.commit()
    return answer_row
