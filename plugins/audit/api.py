from flask.views import MethodView

from app.http import Blueprint
from app.security import require

from . import service
from .schemas import AuditEventSchema, AuditSearchArgs

blp = Blueprint("audit", __name__, url_prefix="/v1/admin/audit", description="Security audit trail.")


@blp.route("")
class Audit(MethodView):
    @require("admin:audit")
    @blp.arguments(AuditSearchArgs, location="query")
    @blp.paginated(AuditEventSchema)
    def get(self, args):
        """Security events, newest first; filter by actor, target, type and time"""
        return service.search(**args)
