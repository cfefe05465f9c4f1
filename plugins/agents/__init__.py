"""Agents: a built-in catalog, your own agents with conversations, executions, chains and flows."""
import os

from app.plugins import Plugin

from . import tasks  # noqa: F401  (registers the execution job kind, in web servers and RQ workers alike)
from .api import blp
from .api_chains import blp as chains_blp
from .api_executions import blp as executions_blp
from .api_flows import blp as flows_blp
from .cli import agents_cli


def _seed() -> dict[str, int]:
    from . import service

    return service.seed_catalog()


plugin = Plugin(
    name="agents",
    version="1.0.0",
    description="Agents, conversations, streamed executions, chains and flows.",
    blueprint=(blp, flows_blp, chains_blp, executions_blp),
    requires=("auth", "keys"),
    scopes={"agents:read": "List and read your agents, conversations and executions",
            "agents:write": "Create, change, delete and run your agents, chains and flows"},
    models="plugins.agents.models",
    migrations=os.path.join(os.path.dirname(__file__), "migrations"),
    cli=agents_cli,
    seed=_seed,
    config={
        "AGENTS_MAX_TOKENS": 1024,  # default answer budget when neither the request nor the agent sets one
        "AGENTS_MAX_TOKENS_LIMIT": 4096,  # no request, agent or node gets more per answer
        "AGENTS_EXECUTION_TIMEOUT": 600,  # seconds one job of an execution may run (a paused flow resumes in a new one)
        "AGENTS_SYNC_WAIT_SECONDS": 300.0,  # `stream: false` waits this long, then answers 202
        "AGENTS_FIRST_EVENT_WAIT_SECONDS": 120.0,  # a stream waits this long for the first token before answering
        "AGENTS_TOKEN_BATCH_SECONDS": 0.05,  # token deltas within this window become one stored event
        "AGENTS_HISTORY_MAX_MESSAGES": 200,  # most recent messages considered when fitting a conversation
        "AGENTS_FLOW_MAX_NODES": 100,
        "AGENTS_FLOW_MAX_STEPS": 500,  # node attempts (retries included) per flow execution, then FLOW_STEP_LIMIT
        # seconds a flow execution may run, summed over its segments (waiting for input is not counted), then
        # timed_out; each segment is one job, also bounded by AGENTS_EXECUTION_TIMEOUT
        "AGENTS_FLOW_MAX_SECONDS": 600.0,
        "AGENTS_FLOW_CONCURRENCY": 4,  # nodes of one flow execution that may run at the same time
    },
)
