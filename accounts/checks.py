"""``manage.py check --deploy``: the processes should connect as the app role, not the tables'
owner (docs/deployment.md "Two database roles", issue 15)."""

from __future__ import annotations

from django.core.checks import Tags, Warning, register
from django.db import DatabaseError, connection

from radiology.db import connected_role_hazards


@register(Tags.security, deploy=True)
def database_role_check(app_configs=None, **kwargs) -> list[Warning]:
    if connection.vendor != "postgresql":
        return []
    try:
        with connection.cursor() as cursor:
            hazards = connected_role_hazards(cursor)
    except DatabaseError:
        return []  # no database to ask: other checks and the start-up say so
    if not hazards:
        return []
    return [
        Warning(
            f"The database role ReadRoom connects as {'; '.join(hazards)}.",
            hint="Connect the processes as the app role and run migrate as the owner: "
            "manage.py db_roles --owner readroom_owner --app readroom (docs/deployment.md).",
            id="readroom.W015",
        )
    ]
