"""Channel-layer group names. Routing (issue: worklist) sends study events to the groups of the
readers eligible for the study and to operations; a socket joins only the groups its user belongs in."""

OPERATIONS_GROUP = "worklist.operations"


def user_group(user_id: int) -> str:
    return f"worklist.user.{user_id}"


# The medical director(s): the code-stroke director step (``worklist.escalation``) is told here.
DIRECTOR_GROUP = "worklist.director"
