"""``manage.py drf_create_token USER``: issue an API token and print it — the only time it is shown
(ReadRoom stores its hash, accounts.tokens). Keeps the name and output of DRF's command, which
hospitals' runbooks use."""

from django.core.management.base import BaseCommand, CommandError

from accounts.models import User
from accounts.tokens import api_token_issue


class Command(BaseCommand):
    help = "Issue an API token for a user and print it once (only its hash is stored)."

    def add_arguments(self, parser) -> None:
        parser.add_argument("username")
        parser.add_argument(
            "-r", "--reset", action="store_true", help="revoke the user's other tokens (rotation)"
        )
        parser.add_argument("--days", type=int, default=None, help="expiry in days (0: never)")

    def handle(self, *args, username: str, reset: bool, days: int | None, **options) -> None:
        user = User.objects.filter(username=username).first()
        if user is None:
            raise CommandError(f"No user {username!r}.")
        issued = api_token_issue(user=user, days=days, replace=reset)
        expiry = issued.token.expires_at.date().isoformat() if issued.token.expires_at else "never"
        self.stdout.write(f"Generated token {issued.key} for user {username}")
        self.stderr.write(f"It expires: {expiry}. It is not stored and cannot be shown again.")
