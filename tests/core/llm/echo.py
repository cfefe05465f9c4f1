"""A tiny third-party provider kind for tests, registered through the public registry API."""
from __future__ import annotations

from collections.abc import Iterator

from app import llm


class EchoProvider(llm.Provider):
    """Answers with the last user message, reversed; `fail_first` makes its first N calls fail."""
    kind = "echo"
    extra_settings = frozenset({"fail_first", "reject"})

    def __init__(self, name, settings):
        super().__init__(name, settings)
        self.calls = 0

    def _maybe_fail(self) -> None:
        self.calls += 1
        if self.settings.get("reject"):
            raise llm.ProviderError("prompt too long", provider=self.name, status=400, retryable=False)
        if self.calls <= int(self.settings.get("fail_first", 0)):
            raise llm.ProviderError("upstream down", provider=self.name, status=503)

    def _answer(self, request: llm.ChatRequest) -> str:
        return request.messages[-1].content[::-1]

    def chat(self, request):
        self._maybe_fail()
        text = self._answer(request)
        return llm.ChatResult(content=text, model=request.model or "echo-1", provider=self.name,
                              usage=llm.Usage(self.count_prompt_tokens(request.messages), self.count_tokens(text)))

    def stream(self, request) -> Iterator[llm.StreamChunk]:
        self._maybe_fail()
        text = self._answer(request)
        for char in text:
            yield llm.StreamChunk(delta=char)
        yield llm.StreamChunk(finish_reason="stop", usage=llm.Usage(1, len(text)))
