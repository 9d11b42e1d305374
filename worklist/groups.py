"""Channel-layer group names. Routing (issue: worklist) sends study events to the groups of the
readers eligible for the study and to operations; a socket joins only the groups its user belongs in."""

import hashlib

OPERATIONS_GROUP = "worklist.operations"


def user_group(user_id: int) -> str:
    return f"worklist.user.{user_id}"


# The medical director(s): the code-stroke director step (``worklist.escalation``) is told here.
DIRECTOR_GROUP = "worklist.director"


def session_group(session_key: str) -> str:
    """The sockets of one browser session: told to close when the session ends (logout). A hash,
    so the session key itself never becomes a channel-layer key in Redis."""
    return "worklist.session." + hashlib.sha256(session_key.encode()).hexdigest()[:40]


# The message that closes a session's sockets (``WorklistConsumer.session_ended``).
SESSION_ENDED = {"type": "session.ended"}
