"""gunicorn settings: `gunicorn -c gunicorn.conf.py wsgi:app`. Every value can be set by env."""
import multiprocessing
import os

worker_class = os.environ.get("GUNICORN_WORKER_CLASS", "gevent")
if worker_class == "gevent":
    # Patch before the app is imported (preload): sockets, threads and ssl must all be cooperative.
    from gevent import monkey

    monkey.patch_all()

_shared_state = bool(os.environ.get("LUNAOS_REDIS_URL") or os.environ.get("REDIS_URL"))
# Without Redis, limits, in-process jobs and SSE fan-out live in one process: serve from one worker.
workers = int(os.environ.get("GUNICORN_WORKERS") or (multiprocessing.cpu_count() if _shared_state else 1))
bind = os.environ.get("GUNICORN_BIND", "127.0.0.1:8000")
worker_connections = int(os.environ.get("GUNICORN_WORKER_CONNECTIONS", "1000"))
timeout = int(os.environ.get("GUNICORN_TIMEOUT", "60"))
graceful_timeout = int(os.environ.get("GUNICORN_GRACEFUL_TIMEOUT", "30"))
keepalive = int(os.environ.get("GUNICORN_KEEPALIVE", "5"))
preload_app = os.environ.get("GUNICORN_PRELOAD", "true").lower() == "true"
accesslog = None  # the app writes one JSON line per request itself
errorlog = "-"


def post_fork(server, worker):
    # Connections opened in the master must not be shared by the forked workers.
    if preload_app:
        import wsgi
        from app.extensions import db

        with wsgi.app.app_context():
            db.engine.dispose(close=False)
