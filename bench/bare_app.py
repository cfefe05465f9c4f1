"""The ceiling for `bench.http`: a bare Flask app with one small JSON route, nothing else.

Served by the same `gunicorn.conf.py` as the full app (`gunicorn bench.bare_app:app`),
so any gap between the two is the cost of LunaOS's middleware, not of the server.
"""
from flask import Flask

app = Flask(__name__)


@app.get("/")
def index():
    # About the size and shape of the full app's `GET /`.
    return {"status": "ok", "name": "bare", "version": "0.0.0", "docs": "/docs"}
