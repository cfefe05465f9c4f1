"""WSGI entry point: `gunicorn wsgi:app` (see gunicorn.conf.py), `FLASK_APP=wsgi`."""
from app import create_app

app = create_app()
