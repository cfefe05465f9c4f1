"""Well-formed plugins, plus the malformed exports the loader must refuse."""
import click
from flask.views import MethodView

from app.http import Blueprint
from app.plugins import Plugin
from app.security import require

alpha_blp = Blueprint("case_alpha", __name__, url_prefix="/v1/alpha")


@alpha_blp.route("/ping")
class Ping(MethodView):
    @require("alpha:read")
    @alpha_blp.response(200)
    def get(self):
        """Answer pong"""
        return {"pong": True}


alpha_cli = click.Group("alpha", help="Alpha case commands.")

alpha = Plugin(
    name="alpha",
    version="1.2.3",
    blueprint=alpha_blp,
    scopes={"alpha:read": "Read alpha things"},
    cli=alpha_cli,
    config={"ALPHA_LIMIT": 10, "ALPHA_TIERS": {"free": 1}},
)
beta = Plugin(name="beta", requires=("alpha",))
gamma = Plugin(name="gamma", requires=("beta", "delta"))
delta = Plugin(name="delta")
epsilon = Plugin(name="epsilon", requires=("alpha",))

# A dependency cycle: cyc_a -> cyc_b -> cyc_c -> cyc_a.
cyc_a = Plugin(name="cyc_a", requires=("cyc_b",))
cyc_b = Plugin(name="cyc_b", requires=("cyc_c",))
cyc_c = Plugin(name="cyc_c", requires=("cyc_a",))

# Exports that are not what their entry point claims.
not_a_plugin = {"name": "alpha", "version": "1.0"}
misnamed = Plugin(name="someone_else")
