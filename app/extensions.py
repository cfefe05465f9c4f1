"""Extension objects that can serve several apps at once. No side effects.

The smorest `Api`, the `Limiter` and `Talisman` keep per-app state on the
instance itself, so `openapi.py`, `ratelimit.py` and `http_security.py` build
one per app and keep it in `app.extensions`.
"""
from collections.abc import Callable
from typing import TypeVar

from flask import Flask, current_app
from flask_cors import CORS
from flask_jwt_extended import JWTManager
from flask_migrate import Migrate
from flask_sqlalchemy import SQLAlchemy

from .models import Base

db = SQLAlchemy(model_class=Base, session_options={"expire_on_commit": False})
migrate = Migrate(compare_type=True, render_as_batch=True)
jwt = JWTManager()
cors = CORS()


T = TypeVar("T")


def per_app(name: str, factory: Callable[[], T], app: Flask | None = None) -> T:
    """`app.extensions[name]`, made by `factory` on first use. (`setdefault(name, factory())`
    would build and drop a new object, lock included, on every call; these are per-request.)"""
    extensions = (app or current_app._get_current_object()).extensions
    found = extensions.get(name)
    if found is None:
        found = extensions.setdefault(name, factory())
    return found
