"""The router: picks providers by strategy, retries with backoff, fails over, keeps the circuit breakers.

One request walks the candidates (the providers serving its model, ordered
by LLM_STRATEGY) once per pass; a retryable failure moves on to the next
one, and after a pass where all failed it waits (exponential backoff with
jitter) and makes another pass, LLM_RETRIES times. A provider failing
LLM_FAILURE_THRESHOLD times in a row cools down for LLM_COOLDOWN_SECONDS and
is skipped; then one request probes it and a success lets it back in.
Non-retryable failures (the upstream refused the request itself, e.g. 400)
go straight to the caller: another provider would refuse it too.
"""
from __future__ import annotations

import dataclasses
import itertools
import logging
import random
import time
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

from ..errors import ApiError, ValidationFailed
from ..ids import isoformat
from .base import Provider
from .config import LLMSettings
from .state import SharedState, Ticket
from .types import (Attempt, ChatRequest, ChatResult, LLMUnavailable, LLMUpstreamError, ModelNotFound, ProviderError,
                    StreamChunk, Usage)

log = logging.getLogger("lunaos.llm")
T = TypeVar("T")
LEASE_MARGIN = 30.0  # seconds an in-flight mark outlives the request timeout (a dead process's marks expire)
MAX_BACKOFF = 10.0


class LLMRequestRejected(ApiError):
    """The provider refused the request itself (e.g. a prompt longer than the model's context)."""
    status = 400
    code = "LLM_REQUEST_REJECTED"
    message = "The language model provider rejected the request."


def describe(error: BaseException) -> str:
    """A short, secret-free description for attempts and headers."""
    if isinstance(error, ProviderError):
        text = f"HTTP {error.status}" if error.status else str(error)
    else:
        text = type(error).__name__
    return " ".join(text.split())[:120]


class ChatStream(Iterator[StreamChunk]):
    """A started stream: the first chunk is already in hand. Iterate for the rest; `.close()` aborts.

    A failure after the first chunk raises ProviderError from `next()`; the provider's
    breaker counts it. `.usage` and `.finish_reason` are set once the final chunk passed.
    """

    def __init__(self, router: Router, provider: Provider, model: str | None, first: StreamChunk,
                 rest: Iterator[StreamChunk], ticket: Ticket, attempts: list[Attempt], started: float):
        self.provider = provider.name
        self.model = model
        self.attempts = attempts
        self.usage: Usage | None = None
        self.finish_reason: str | None = None
        self.latency_ms = (time.monotonic() - started) * 1000  # time to the first chunk
        self._router = router
        self._provider = provider
        self._pending: StreamChunk | None = first
        self._rest = rest
        self._ticket: Ticket | None = ticket

    def __iter__(self) -> ChatStream:
        return self

    def __next__(self) -> StreamChunk:
        if self._pending is not None:
            chunk, self._pending = self._pending, None
            return self._seen(chunk)
        if self._ticket is None:
            raise StopIteration
        try:
            chunk = next(self._rest)
        except StopIteration:
            self._finish()
            raise
        except ProviderError as error:
            self._fail(error)
            raise
        except Exception as error:  # a provider bug mid-stream is still a provider failure for the caller
            log.exception("llm provider %s failed mid-stream", self.provider)
            wrapped = ProviderError(describe(error), provider=self.provider)
            self._fail(wrapped)
            raise wrapped from error
        self._router.state.renew(self._ticket, self._router.lease(self._provider))
        return self._seen(chunk)

    def _seen(self, chunk: StreamChunk) -> StreamChunk:
        if chunk.finish_reason is not None:
            self.finish_reason = chunk.finish_reason
            self.usage = chunk.usage
        return chunk

    def _fail(self, error: ProviderError) -> None:
        error.provider = error.provider or self.provider
        self._router.failed(self._provider, error)
        self._finish()

    def _finish(self) -> None:
        if self._ticket is not None:
            ticket, self._ticket = self._ticket, None
            self._router.state.end(ticket)

    def close(self) -> None:
        """Stop generating (the upstream connection is closed) and release the provider."""
        self._pending = None
        close = getattr(self._rest, "close", None)
        try:
            if close is not None:
                close()
        finally:
            self._finish()

    def __del__(self) -> None:
        # An abandoned stream must not stay counted as in flight. No network I/O in a finalizer
        # (it may run inside the gevent hub): a Redis mark is left to expire with its lease.
        ticket = getattr(self, "_ticket", None)
        if ticket is not None and ticket.backend == "memory":
            try:
                self._finish()
            except Exception:  # noqa: BLE001 - interpreter shutdown: nothing to do
                pass


class Router:
    def __init__(self, providers: list[Provider], settings: LLMSettings, state: SharedState):
        order = {id(p): i for i, p in enumerate(providers)}
        self.providers = sorted(providers, key=lambda p: (p.priority, order[id(p)]))
        self.by_name = {p.name: p for p in self.providers}
        self.settings = settings
        self.state = state
        self._turn = itertools.count()

    # choosing
    def lease(self, provider: Provider) -> float:
        return provider.timeout + LEASE_MARGIN

    def candidates(self, request: ChatRequest, provider: str | None = None) -> list[Provider]:
        if provider is not None:
            chosen = self.by_name.get(provider)
            if chosen is None:
                known = ", ".join(self.by_name) or "none configured"
                raise ValidationFailed({"provider": [f"Unknown provider {provider!r}; configured: {known}."]})
            if not chosen.serves(request.model):
                raise ModelNotFound(f"Provider {provider!r} does not serve model {request.model!r}.",
                                    details={"model": request.model, "provider": provider,
                                             "models": chosen.list_models()})
            return [chosen]
        if not self.providers:
            raise LLMUnavailable()
        serving = [p for p in self.providers if p.serves(request.model)]
        if not serving:
            raise ModelNotFound(f"No configured provider serves model {request.model!r}.",
                                details={"model": request.model,
                                         "models": sorted({m for p in self.providers for m in p.models})})
        return self.order(serving)

    def order(self, providers: list[Provider]) -> list[Provider]:
        strategy = self.settings.strategy
        if strategy == "priority" or len(providers) < 2:
            return list(providers)
        shift = next(self._turn) % len(providers)
        rotated = providers[shift:] + providers[:shift]
        if strategy == "round_robin":
            return rotated
        names = [p.name for p in providers]
        position = {p.name: i for i, p in enumerate(rotated)}
        if strategy == "least_loaded":
            counts = self.state.inflight(names)
            return sorted(rotated, key=lambda p: (counts[p.name], position[p.name]))
        latency = self.state.latency(names)
        # fastest: a provider never measured goes first, so every provider gets measured.
        return sorted(providers, key=lambda p: (latency[p.name] is not None, latency[p.name] or 0.0))

    # outcomes
    def failed(self, provider: Provider, error: ProviderError) -> None:
        if not error.retryable:
            # The request's fault, and proof the provider answers (it may have been a probe).
            self.state.record_success(provider.name)
            return
        opened = self.state.record_failure(provider.name, self.settings.failure_threshold, self.settings.cooldown)
        if opened is not None:
            log.warning("llm provider %s cools down until %s after %s", provider.name,
                        isoformat_epoch(opened), describe(error))

    def _backoff(self, pass_number: int) -> float:
        base = self.settings.backoff * (2 ** (pass_number - 1))
        return min(MAX_BACKOFF, base) * random.uniform(0.5, 1.0)

    def _attempt(self, request: ChatRequest, provider: str | None, call: Callable[[Provider, ChatRequest], T],
                 ) -> tuple[Provider, ChatRequest, T, Ticket, list[Attempt], float]:
        """Run `call` on candidates until one succeeds; returns it with its still-open in-flight ticket."""
        candidates = self.candidates(request, provider)
        attempts: list[Attempt] = []
        errors: list[ProviderError] = []
        skipped: set[str] = set()
        for pass_number in range(1 + self.settings.retries):
            if pass_number:
                if not errors:
                    break  # nothing was tried (all cooling down): waiting would not change that soon
                time.sleep(self._backoff(pass_number))
            for candidate in candidates:
                # One step: breaker check (and probe claim after a cool-down) plus the in-flight mark.
                _, ticket = self.state.enter(candidate.name, self.lease(candidate), self.lease(candidate))
                if ticket is None:
                    if candidate.name not in skipped:
                        skipped.add(candidate.name)
                        attempts.append(Attempt(candidate.name, "skipped", 0.0, "cooling down"))
                    continue
                routed = request if request.model else dataclasses.replace(request, model=candidate.default_model)
                started = time.monotonic()
                try:
                    value = call(candidate, routed)
                except Exception as raised:  # noqa: BLE001 - every failure is classified below
                    self.state.end(ticket)
                    error = self._as_provider_error(candidate, raised)
                    duration = (time.monotonic() - started) * 1000
                    attempts.append(Attempt(candidate.name, "error", round(duration, 1), describe(error)))
                    log.info("llm provider %s failed (%s) after %.0f ms", candidate.name, describe(error), duration)
                    if not error.retryable:
                        raise self._rejected(error, attempts) from raised
                    self.failed(candidate, error)
                    errors.append(error)
                    continue
                return candidate, routed, value, ticket, attempts, started
        raise self._exhausted(request, attempts, errors)

    @staticmethod
    def _as_provider_error(provider: Provider, raised: BaseException) -> ProviderError:
        if isinstance(raised, ProviderError):
            raised.provider = raised.provider or provider.name
            return raised
        log.error("llm provider %s raised %s", provider.name, type(raised).__name__, exc_info=raised)
        return ProviderError(f"{type(raised).__name__}", provider=provider.name)

    def _rejected(self, error: ProviderError, attempts: list[Attempt]) -> ApiError:
        details = {"provider": error.provider, "upstream_status": error.status, "attempts": _plain(attempts)}
        if error.status == 404:
            return ModelNotFound(f"Provider {error.provider!r} has no such model: {error}", details=details)
        return LLMRequestRejected(f"Provider {error.provider!r} rejected the request: {error}", details=details)

    def _exhausted(self, request: ChatRequest, attempts: list[Attempt], errors: list[ProviderError]) -> ApiError:
        details: dict[str, Any] = {"attempts": _plain(attempts)}
        if not errors:
            cooling = self.state.cooldowns([a.provider for a in attempts])
            ends = [u for u in cooling.values() if u]
            retry_after = max(1, int(min(ends) - time.time()) + 1) if ends else 1
            details["retry_after"] = retry_after
            return LLMUnavailable("Every provider for this request is cooling down after repeated failures; "
                                  "retry shortly.", details=details, headers={"Retry-After": str(retry_after)})
        if all(e.status == 404 for e in errors):
            return ModelNotFound(f"No provider has model {request.model!r}.", details=details)
        return LLMUpstreamError(f"Every provider failed ({len(errors)} attempt(s)); last: {describe(errors[-1])}.",
                                details=details)

    # the two calls
    def chat(self, request: ChatRequest, provider: str | None = None) -> ChatResult:
        chosen, routed, result, ticket, attempts, started = self._attempt(
            request, provider, lambda p, r: p.chat(r))
        latency = (time.monotonic() - started) * 1000
        self.state.complete(ticket, latency)  # one step: in-flight mark off, latency, breaker reset
        attempts.append(Attempt(chosen.name, "ok", round(latency, 1)))
        result.provider = chosen.name
        result.model = result.model or routed.model or ""
        result.attempts = attempts
        result.latency_ms = round(latency, 1)
        return result

    def stream(self, request: ChatRequest, provider: str | None = None) -> ChatStream:
        def first_chunk(p: Provider, r: ChatRequest) -> tuple[StreamChunk, Iterator[StreamChunk]]:
            chunks = iter(p.stream(r))
            try:
                return next(chunks), chunks
            except StopIteration:
                raise ProviderError("the stream ended before any output", provider=p.name) from None
            except BaseException:
                close = getattr(chunks, "close", None)
                if close is not None:
                    close()
                raise

        chosen, routed, (first, rest), ticket, attempts, started = self._attempt(request, provider, first_chunk)
        latency = (time.monotonic() - started) * 1000  # time to the first chunk
        self.state.succeeded(chosen.name, latency)
        attempts.append(Attempt(chosen.name, "ok", round(latency, 1)))
        return ChatStream(self, chosen, routed.model, first, rest, ticket, attempts, started)

    # reporting
    def status(self) -> list[dict[str, Any]]:
        names = [p.name for p in self.providers]
        counts = self.state.inflight(names)
        latency = self.state.latency(names)
        cooling = self.state.cooldowns(names)
        return [{
            "name": p.name,
            "kind": p.kind,
            "available": cooling[p.name] is None,
            "models": p.list_models(),
            "active_requests": counts[p.name],
            "avg_latency_ms": round(latency[p.name], 1) if latency[p.name] is not None else None,
            "cooldown_until": isoformat_epoch(cooling[p.name]) if cooling[p.name] else None,
        } for p in self.providers]

    def close(self) -> None:
        for p in self.providers:
            try:
                p.close()
            except Exception:  # noqa: BLE001 - closing is best effort
                log.debug("closing llm provider %s failed", p.name, exc_info=True)


def _plain(attempts: list[Attempt]) -> list[dict[str, Any]]:
    return [dataclasses.asdict(a) for a in attempts]


def isoformat_epoch(seconds: float) -> str | None:
    from datetime import UTC, datetime

    return isoformat(datetime.fromtimestamp(seconds, tz=UTC))
