"""Server-sent events: wire format, heartbeats, resume with Last-Event-ID, fan-out in-process and through Redis."""
from __future__ import annotations

import subprocess
import sys
import threading
import uuid

import pytest
from flask import request

from app import sse, tasks
from tests.conftest import base_config
from tests.support import test_tasks
from tests.support.servers import ROOT, SSEReader, subprocess_env, wait_until

HISTORY = [("chat", {"n": n}, str(n)) for n in range(1, 4)]


def add_stream_route(app, *, replay_history: bool = False, during_replay=None) -> None:
    """A route streaming `/stream/<channel>`; it ends on an event named `end`."""

    def replay(last_event_id):
        after = int(last_event_id or 0)
        for event, data, event_id in HISTORY:
            if int(event_id) > after:
                yield event, data, event_id
        if during_replay is not None:
            during_replay()  # e.g. a producer publishing while the client catches up

    @app.get("/stream/<channel>")
    def stream_view(channel):
        return sse.stream(channel, replay=replay if replay_history else None,
                          terminal=lambda event, data: event == "end",
                          last_event_id=request.args.get("last_event_id"))


def open_stream(client, path, **kwargs):
    response = client.get(path, buffered=False, **kwargs)
    assert response.status_code == 200
    reader = SSEReader(response.response)
    first = reader.next_frame()
    assert first == {"retry": 3000}  # sent once subscribed: what the client reads next is live
    return response, reader


def test_event_frames_follow_the_sse_format():
    assert sse.format_event({"a": 1, "b": "x"}, event="progress", id="7") == \
        'id: 7\nevent: progress\ndata: {"a":1,"b":"x"}\n\n'
    assert sse.format_event("line one\nline two") == "data: line one\ndata: line two\n\n"
    assert sse.format_event("[DONE]") == "data: [DONE]\n\n"
    # A newline smuggled into a field cannot start a forged frame.
    forged = sse.format_event(1, event="x\ndata: evil", id="1\n\nid: 2")
    assert forged == "id: 1  id: 2\nevent: x data: evil\ndata: 1\n\n"


def test_stream_headers_heartbeats_and_release_on_disconnect(make_app):
    app = make_app(SSE_HEARTBEAT_SECONDS=0.05)
    add_stream_route(app)
    client = app.test_client()
    response, reader = open_stream(client, "/stream/quiet", headers={"X-Request-ID": "sse-test-1"})
    assert response.mimetype == "text/event-stream"
    assert response.headers["Cache-Control"] == "no-cache"
    assert response.headers["X-Accel-Buffering"] == "no"
    assert response.headers["X-Request-ID"] == "sse-test-1"
    assert reader.next_frame() == {"comment": "heartbeat"}  # nothing published: the connection is kept alive
    with app.app_context():
        assert sse.subscriber_count("quiet") == 1
    response.close()  # what the server does when the client goes away
    with app.app_context():
        assert sse.subscriber_count("quiet") == 0


def test_in_process_fan_out_reaches_every_subscriber_of_the_channel_only(make_app):
    app = make_app(SSE_HEARTBEAT_SECONDS=5)
    add_stream_route(app)
    client = app.test_client()
    first, first_reader = open_stream(client, "/stream/room")
    second, second_reader = open_stream(client, "/stream/room")
    other, other_reader = open_stream(client, "/stream/other")

    def produce():
        with app.app_context():
            sse.publish("room", "chat", {"text": "hello"}, id="1")
            sse.publish("other", "end", {"text": "bye"})
            sse.publish("room", "end", {}, id="2")

    threading.Thread(target=produce).start()
    for reader in (first_reader, second_reader):
        events = reader.events_until(lambda e: e["event"] == "end")
        assert [(e["event"], e["data"], e["id"]) for e in events] == [("chat", {"text": "hello"}, "1"),
                                                                      ("end", {}, "2")]
        assert reader.next_frame() is None  # the terminal event ends the stream
    assert [e["event"] for e in other_reader.events_until(lambda e: e["event"] == "end")] == ["end"]
    assert other_reader.next_frame() is None
    with app.app_context():
        assert sse.subscriber_count("room") == sse.subscriber_count("other") == 0


def test_last_event_id_resumes_after_that_event_without_losing_or_repeating_any(make_app):
    app = make_app(SSE_HEARTBEAT_SECONDS=5)

    def racing_producer():
        # Published after the subscription but before the replay finished: a live copy of an
        # event the replay already sent (3), an older one (2) and a new one (4).
        sse.publish("room", "chat", {"n": 3}, id="3")
        sse.publish("room", "chat", {"n": 2}, id="2")
        sse.publish("room", "chat", {"n": 4}, id="4")
        sse.publish("room", "end", {}, id="5")

    add_stream_route(app, replay_history=True, during_replay=racing_producer)
    client = app.test_client()
    response, reader = open_stream(client, "/stream/room", headers={"Last-Event-ID": "1"})
    events = reader.events_until(lambda e: e["event"] == "end")
    assert [e["id"] for e in events] == ["2", "3", "4", "5"]
    assert events[0]["data"] == {"n": 2}

    # Without Last-Event-ID the replay starts from the beginning.
    response, reader = open_stream(client, "/stream/room")
    assert [e["id"] for e in reader.events_until(lambda e: e["event"] == "end")] == ["1", "2", "3", "4", "5"]


@pytest.mark.db
def test_job_event_stream_sends_a_snapshot_then_live_progress_until_the_final_status(make_app, principal_token):
    app = make_app(JOBS_PROGRESS_INTERVAL=0.05, SSE_HEARTBEAT_SECONDS=5)
    headers = {"Authorization": f"Bearer {principal_token(app, id='usr_a')}"}
    gate = f"gate-{uuid.uuid4()}"
    with app.app_context():
        job_id = tasks.enqueue("test.gated", {"gate": gate}, owner_id="usr_a").id
    client = app.test_client()
    try:
        response, reader = open_stream(client, f"/v1/jobs/{job_id}/events", headers=headers)
        snapshot = reader.next_event()
        assert snapshot["event"] == "status"
        assert snapshot["data"]["id"] == job_id and snapshot["data"]["status"] in ("queued", "running")
        # The job is held at its gate, so progress 10 (in the snapshot or a live event) is seen
        # while it runs, not at the end.
        before_gate = [snapshot]
        if snapshot["data"]["progress"] != 10:
            before_gate += reader.events_until(lambda e: e["event"] == "progress" and e["data"]["progress"] == 10)
        assert before_gate[-1]["data"]["message"] == "waiting at the gate"
    finally:
        test_tasks.gate(gate).set()
    rest = reader.events_until(lambda e: e["event"] == "status" and e["data"]["status"] == "succeeded")
    assert rest[-1]["data"]["result"] == {"gate": gate, "attempt": 1}
    notes = [e for e in rest if e["event"] == "note"]  # what the job itself publishes reaches the stream too
    assert [e["data"] for e in notes] == [{"text": "through the gate"}] and notes[0]["id"] is None
    ids = [int(e["id"]) for e in [*before_gate, *rest] if e["id"] is not None]
    assert ids == sorted(set(ids))  # increasing, no repeats
    assert reader.next_frame() is None  # ends after the final status

    # Reconnecting with Last-Event-ID to a finished job: the final snapshot, then the end.
    response, reader = open_stream(client, f"/v1/jobs/{job_id}/events",
                                   headers={**headers, "Last-Event-ID": str(ids[-1])})
    assert reader.next_event()["data"]["status"] == "succeeded"
    assert reader.next_frame() is None


PUBLISHER = """
import sys
from app import sse
from tests.support.testapp import create_test_app

app = create_test_app()
with app.app_context():
    for n in range(3):
        sse.publish(sys.argv[1], "tick", {"n": n, "from": "subprocess"}, id=str(n + 1))
    sse.publish(sys.argv[1], "end", {}, id="4")
"""


def test_redis_fan_out_delivers_events_published_by_another_process(make_app, schema, worker, redis_url,
                                                                    redis_client):
    app = make_app(REDIS_URL=redis_url, SSE_HEARTBEAT_SECONDS=5)
    twin = make_app(REDIS_URL=redis_url)  # another app in this process shares the pub/sub connection
    add_stream_route(app)
    add_stream_route(twin)
    channel = f"room-{uuid.uuid4().hex[:8]}"
    full_name = f"lunaos-test-{worker}:sse:{channel}"
    with app.app_context():
        assert sse.broker() is sse.broker(twin)

    first, first_reader = open_stream(app.test_client(), f"/stream/{channel}")
    second, second_reader = open_stream(twin.test_client(), f"/stream/{channel}")
    # One Redis subscription for the process, however many local clients watch the channel.
    assert redis_client.pubsub_numsub(full_name) == [(full_name.encode(), 1)]

    env = subprocess_env({**base_config(schema, worker), "REDIS_URL": redis_url})
    done = subprocess.run([sys.executable, "-c", PUBLISHER, channel], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr[-3000:]

    for reader in (first_reader, second_reader):
        events = reader.events_until(lambda e: e["event"] == "end")
        assert [(e["event"], e["id"]) for e in events] == [("tick", "1"), ("tick", "2"), ("tick", "3"), ("end", "4")]
        assert events[0]["data"] == {"n": 0, "from": "subprocess"}
        assert reader.next_frame() is None
    # Both streams ended: the process unsubscribed from Redis.
    wait_until(lambda: redis_client.pubsub_numsub(full_name) == [(full_name.encode(), 0)],
               message="the Redis subscription to be released")


def test_redis_streams_of_different_prefixes_do_not_see_each_other(make_app, redis_url, redis_client):
    app = make_app(REDIS_URL=redis_url, SSE_HEARTBEAT_SECONDS=5)
    other = make_app(REDIS_URL=redis_url, REDIS_KEY_PREFIX=app.config["REDIS_KEY_PREFIX"] + "other:")
    add_stream_route(app)
    response, reader = open_stream(app.test_client(), "/stream/shared")
    with other.app_context():
        sse.publish("shared", "chat", {"from": "another deployment"})
    with app.app_context():
        sse.publish("shared", "end", {"from": "this deployment"})
    assert [e["data"]["from"] for e in reader.events_until(lambda e: e["event"] == "end")] == ["this deployment"]


def test_a_dropped_redis_connection_never_leaves_a_stream_hanging(make_app, redis_url, redis_client):
    app = make_app(REDIS_URL=redis_url, SSE_HEARTBEAT_SECONDS=0.05)
    add_stream_route(app)
    client = app.test_client()
    response, reader = open_stream(client, "/stream/fragile")
    with app.app_context():
        connection = sse.broker()._pubsub.connection
        host, port = connection._sock.getsockname()[:2]
    redis_client.execute_command("CLIENT", "KILL", "ADDR", f"{host}:{port}")

    # The stream either carries on (redis-py reconnects and re-subscribes) or ends, so that
    # EventSource reconnects and replays; it never stays open while deaf.
    def delivered_or_ended():
        with app.app_context():
            sse.publish("fragile", "ping", {})
        frame = reader.next_frame()
        return "ended" if frame is None else ("delivered" if frame.get("event") == "ping" else None)

    assert wait_until(delivered_or_ended, message="the stream to recover or end") in ("delivered", "ended")
    response.close()
    response, reader = open_stream(client, "/stream/fragile")  # and new streams work
    with app.app_context():
        sse.publish("fragile", "end", {"ok": True})
    assert reader.events_until(lambda e: e["event"] == "end")[-1]["data"] == {"ok": True}
