"""gunicorn settings: `gunicorn -c gunicorn.conf.py wsgi:app`. Every value can be set by env.

Worker class: gevent by default. SSE streams (agent runs, job progress) hold a
connection for minutes and AI routes wait seconds on upstream providers; a
sync worker is tied up for all of that time, a gevent worker serves others
meanwhile (and overlaps Redis/database round trips). Measured with
`python -m bench.http` (README): below saturation gevent has the lower p99;
only when driven past saturation does sync keep a tighter p99, because its
kernel accept queue is first-in first-out while a saturated gevent worker
multiplexes every open connection. Plain-JSON-only deployments that run hot
can choose `GUNICORN_WORKER_CLASS=sync` (and more workers, see below).
"""
import multiprocessing
import os

worker_class = os.environ.get("GUNICORN_WORKER_CLASS", "gevent")
if worker_class == "gevent":
    # Patch before the app is imported (preload): sockets, threads and ssl must all be cooperative.
    from gevent import monkey

    monkey.patch_all()

if os.environ.get("GUNICORN_SPEEDUPS", "true").lower() != "false":
    # Header checks once per distinct pair and one Date per second (app/gunicorn_speedups.py).
    from app.gunicorn_speedups import install as _install_speedups

    _install_speedups()

_cpus = multiprocessing.cpu_count()
_shared_state = bool(os.environ.get("LUNAOS_REDIS_URL") or os.environ.get("REDIS_URL"))
if not _shared_state:
    # Without Redis, limits, in-process jobs and SSE fan-out live in one process: serve from one worker.
    _default_workers = 1
elif worker_class == "sync":
    # A sync worker idles through every Redis/database round trip and connection close: more
    # processes than cores keep the CPUs busy (gunicorn's 2 x cores + 1).
    _default_workers = 2 * _cpus + 1
else:
    # One event loop (or thread pool) per core.
    _default_workers = _cpus
workers = int(os.environ.get("GUNICORN_WORKERS") or _default_workers)
threads = int(os.environ.get("GUNICORN_THREADS") or (4 if worker_class == "gthread" else 1))
bind = os.environ.get("GUNICORN_BIND", "127.0.0.1:8000")
backlog = int(os.environ.get("GUNICORN_BACKLOG", "2048"))
# gevent: open connections per worker, SSE streams included.
worker_connections = int(os.environ.get("GUNICORN_WORKER_CONNECTIONS", "1000"))
timeout = int(os.environ.get("GUNICORN_TIMEOUT", "60"))
graceful_timeout = int(os.environ.get("GUNICORN_GRACEFUL_TIMEOUT", "30"))
# Behind a load balancer, set this above the balancer's idle timeout so it never reuses a
# connection gunicorn is closing.
keepalive = int(os.environ.get("GUNICORN_KEEPALIVE", "5"))
max_requests = int(os.environ.get("GUNICORN_MAX_REQUESTS", "0"))
max_requests_jitter = int(os.environ.get("GUNICORN_MAX_REQUESTS_JITTER", "0"))
preload_app = os.environ.get("GUNICORN_PRELOAD", "true").lower() == "true"
# Heartbeat files on tmpfs: on a disk-backed /tmp a slow fsync can stall a worker into a timeout.
worker_tmp_dir = os.environ.get("GUNICORN_WORKER_TMP_DIR") or ("/dev/shm" if os.path.isdir("/dev/shm") else None)
# gunicorn >= 25 opens a control socket at one fixed per-user path, which several servers on one
# machine (tests, benchmarks, a second site) would fight over: only where asked for.
if os.environ.get("GUNICORN_CONTROL_SOCKET"):
    control_socket = os.environ["GUNICORN_CONTROL_SOCKET"]
else:
    control_socket_disable = True
accesslog = None  # the app writes one JSON line per request itself
errorlog = "-"


def post_fork(server, worker):
    # Connections opened in the master must not be shared by the forked workers. Use the app
    # gunicorn loaded (not `import wsgi`): another app served with this file must not build ours.
    if preload_app:
        app = server.app.wsgi()
        db = getattr(app, "extensions", {}).get("sqlalchemy")
        if db is not None:
            with app.app_context():
                db.engine.dispose(close=False)


def post_worker_init(worker):
    # The app's modules, models and caches (~190k objects) live as long as the worker. Left in
    # the collector's generations, every full collection walks them all: a 100-160 ms pause
    # of every connection the worker holds. Frozen, a full collection walks only what was
    # made since (well under a millisecond).
    import gc

    gc.freeze()
