"""Extension objects that can serve several apps at once. No side effects.

The smorest `Api`, the `Limiter` and `Talisman` keep per-app state on the
instance itself, so `openapi.py`, `ratelimit.py` and `http_security.py` build
one per app and keep it in `app.extensions`.
"""
from flask_cors import CORS
from flask_jwt_extended import JWTManager
from flask_migrate import Migrate
from flask_sqlalchemy import SQLAlchemy

from .models import Base

db = SQLAlchemy(model_class=Base, session_options={"expire_on_commit": False})
migrate = Migrate(compare_type=True, render_as_batch=True)
jwt = JWTManager()
cors = CORS()
