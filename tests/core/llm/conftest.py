"""Fixtures of the LLM layer's tests."""
from __future__ import annotations

import pytest

from app import llm

from .echo import EchoProvider


@pytest.fixture
def echo_kind():
    llm.register_kind("echo", EchoProvider)
    yield EchoProvider
    llm.unregister_kind("echo")
