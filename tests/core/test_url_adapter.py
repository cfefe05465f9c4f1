"""LunaFlask's remembered URL adapter binds every request exactly as Flask's own does."""
from __future__ import annotations

from flask import Flask, Request
from hypothesis import given, settings
from hypothesis import strategies as st
from werkzeug.exceptions import BadHost

from app.application import LunaFlask

ADAPTER_FIELDS = ("server_name", "script_name", "subdomain", "url_scheme", "path_info", "default_method", "query_args")

hosts = st.one_of(
    st.sampled_from(["127.0.0.1:8000", "LOCALHOST", "api.Example.com:443", "api.example.com:80", "[::1]:8000",
                     "bücher.example", "xn--bcher-kva.example", "a..b", "host:99999", "bad host", "", "☃.net:8080"]),
    st.text(alphabet="abcXYZ.-:019[]é", max_size=14),
)
# WSGI strings: the request's bytes as latin-1 characters, as servers pass them.
wsgi_text = st.binary(max_size=12).map(lambda raw: raw.decode("latin-1"))
environs = st.fixed_dictionaries({
    "wsgi.url_scheme": st.sampled_from(["http", "https"]),
    "REQUEST_METHOD": st.sampled_from(["GET", "POST", "DELETE"]),
    "SERVER_NAME": st.sampled_from(["127.0.0.1", "::1", "server.local"]),
    "SERVER_PORT": st.sampled_from(["80", "443", "8000"]),
}, optional={
    "HTTP_HOST": hosts,
    "SCRIPT_NAME": st.sampled_from(["", "/api", "/prefix/"]),
    "PATH_INFO": wsgi_text.map(lambda text: "/" + text),
    "QUERY_STRING": wsgi_text,
})


def _apps() -> tuple[Flask, LunaFlask]:
    apps = (Flask("reference"), LunaFlask("luna"))
    for app in apps:
        app.add_url_rule("/v1/things/<id>", "thing", lambda id: id)
    return apps


def _bound(app: Flask, environ: dict) -> tuple:
    request = Request(dict(environ))
    try:
        adapter = app.create_url_adapter(request)
    except BadHost:
        return ("BadHost",)
    return (request.host, *(getattr(adapter, name) for name in ADAPTER_FIELDS))


@settings(max_examples=400, deadline=None)
@given(st.lists(environs, min_size=1, max_size=6))
def test_the_adapter_and_host_equal_flasks_first_time_and_remembered(batch):
    reference, luna = _apps()
    for environ in batch + batch:  # the second pass is served from what the first remembered
        assert _bound(luna, environ) == _bound(reference, environ)


def test_routing_and_url_building_work_through_the_remembered_adapter():
    _, luna = _apps()
    client = luna.test_client()
    for _ in range(2):
        response = client.get("/v1/things/abc?x=1", headers={"Host": "API.example.com"})
        assert response.status_code == 200 and response.get_data(as_text=True) == "abc"
    with luna.test_request_context("/v1/things/1", base_url="https://api.example.com"):
        from flask import url_for

        assert url_for("thing", id="z", _external=True) == "https://api.example.com/v1/things/z"


def test_hosts_remembered_are_bounded():
    _, luna = _apps()
    for n in range(LunaFlask.MAX_HOSTS + 50):
        _bound(luna, {"wsgi.url_scheme": "http", "REQUEST_METHOD": "GET", "SERVER_NAME": "s", "SERVER_PORT": "80",
                      "HTTP_HOST": f"h{n}.example"})
    assert len(luna._hosts) == LunaFlask.MAX_HOSTS


def test_configurations_it_does_not_cover_use_flasks_own_binding():
    # SERVER_NAME and TRUSTED_HOSTS change how Flask binds: nothing is remembered for them.
    for config in ({"SERVER_NAME": "api.example.com"}, {"TRUSTED_HOSTS": ["api.example.com"]}):
        reference, luna = _apps()
        reference.config.update(config)
        luna.config.update(config)
        environ = {"wsgi.url_scheme": "http", "REQUEST_METHOD": "GET", "SERVER_NAME": "s", "SERVER_PORT": "80",
                   "HTTP_HOST": "api.example.com"}
        for _ in range(2):
            assert _bound(luna, environ) == _bound(reference, environ)
        assert luna._hosts == {}
