"""A plugin that imports fine but fails in init_app, and one that depends on it."""
import click
from flask.views import MethodView

from app.http import Blueprint
from app.plugins import Plugin
from app.security import require

flaky_blp = Blueprint("case_flaky", __name__, url_prefix="/v1/flaky")
dependent_blp = Blueprint("case_dependent", __name__, url_prefix="/v1/dependent")


@flaky_blp.route("/ping")
class FlakyPing(MethodView):
    @require("flaky:use")
    @flaky_blp.response(200)
    def get(self):
        """Never reachable: the plugin fails to start"""
        return {}


@dependent_blp.route("/ping")
class DependentPing(MethodView):
    @require()
    @dependent_blp.response(200)
    def get(self):
        """Never reachable: its dependency fails to start"""
        return {}


def _init_app(app):
    raise RuntimeError("cannot reach the flux capacitor")


flaky = Plugin(name="flaky", blueprint=flaky_blp, scopes={"flaky:use": "Use flaky"},
               cli=click.Group("flaky"), init_app=_init_app, health=lambda: "ok")
dependent = Plugin(name="dependent", requires=("flaky",), blueprint=dependent_blp,
                   scopes={"dependent:use": "Use dependent"})
