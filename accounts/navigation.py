"""The role-aware navigation shell: one table of what each role sees in the top bar.

Later features add their page here (worklist, credentialing, QA …) with the roles that may open it;
the view itself still checks the role and the object — the menu is a convenience, not a guard."""

from __future__ import annotations

from dataclasses import dataclass

from django.urls import reverse

from accounts.roles import Role, roles_of


@dataclass(frozen=True)
class NavItem:
    label: str
    url_name: str
    roles: frozenset[Role]
    staff_only: bool = False

    @property
    def url(self) -> str:
        return reverse(self.url_name)


ALL_ROLES = frozenset(Role)

NAVIGATION: tuple[NavItem, ...] = (
    NavItem("Home", "accounts:home", ALL_ROLES),
    NavItem("Worklist", "worklist:reader", frozenset({Role.RADIOLOGIST})),
    NavItem("Worklist", "worklist:operations", frozenset({Role.OPERATIONS, Role.MEDICAL_DIRECTOR})),
    NavItem("My dossier", "credentialing:my_profile", frozenset({Role.RADIOLOGIST})),
    NavItem(
        "Credentialing",
        "credentialing:workspace",
        frozenset({Role.CREDENTIALING, Role.OPERATIONS, Role.MEDICAL_DIRECTOR}),
    ),
    NavItem("Peer review", "qa:reviews", frozenset({Role.RADIOLOGIST})),
    NavItem("QA dashboard", "qa:dashboard", frozenset({Role.MEDICAL_DIRECTOR})),
    NavItem("Adjudication", "qa:adjudication", frozenset({Role.MEDICAL_DIRECTOR})),
    NavItem(
        "QA reports", "qa:quarterly", frozenset({Role.FACILITY_ADMIN, Role.OPERATIONS, Role.MEDICAL_DIRECTOR})
    ),
    NavItem("Readers", "credentialing:readers", frozenset({Role.FACILITY_ADMIN})),
    NavItem(
        "Facilities",
        "facilities:list",
        frozenset({Role.FACILITY_ADMIN, Role.OPERATIONS, Role.MEDICAL_DIRECTOR, Role.CREDENTIALING}),
    ),
    NavItem("Report templates", "reports:template_list", frozenset({Role.FACILITY_ADMIN, Role.OPERATIONS})),
    NavItem("Interfaces", "interfaces:health", frozenset({Role.OPERATIONS})),
    NavItem("On now", "coverage:on_now", frozenset({Role.OPERATIONS})),
    NavItem("Coverage", "coverage:grid", frozenset({Role.OPERATIONS})),
    NavItem("Rota", "coverage:rota", frozenset({Role.OPERATIONS})),
    # the MSO's way to the rota calendar (operations reach it from the rota and coverage pages,
    # keeping their nav bar on one line at 1600 px)
    NavItem("Rota calendar", "coverage:calendar", frozenset({Role.CREDENTIALING})),
    NavItem("Audit log", "accounts:audit_log", frozenset({Role.OPERATIONS, Role.MEDICAL_DIRECTOR})),
    NavItem(
        "Administration",
        "admin:index",
        frozenset({Role.FACILITY_ADMIN, Role.OPERATIONS, Role.CREDENTIALING}),
        staff_only=True,
    ),
)

# Reading rooms are dark (DESIGN.md §8): radiologists' and the medical director's pages default dark.
DARK_ROLES = frozenset({Role.RADIOLOGIST, Role.MEDICAL_DIRECTOR})


def navigation_for(user) -> list[NavItem]:
    if not user.is_authenticated:
        return []
    roles = roles_of(user)
    items = [
        item
        for item in NAVIGATION
        if (roles & item.roles or user.is_superuser) and (user.is_staff or not item.staff_only)
    ]
    # One entry per label: someone with two roles (or a superuser) gets the first "Worklist" only;
    # the reader's worklist sends non-readers on to the operations desk's.
    labels = [item.label for item in items]
    return [item for index, item in enumerate(items) if labels.index(item.label) == index]


def prefers_dark_theme(user) -> bool:
    return bool(roles_of(user) & DARK_ROLES)
