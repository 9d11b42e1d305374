from __future__ import annotations

import base64
from functools import wraps

from django.conf import settings
from django.contrib import messages
from django.contrib.auth import views as auth_views
from django.contrib.auth.decorators import login_required
from django.core.paginator import Paginator
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils.http import url_has_allowed_host_and_scheme
from django_otp import login as otp_login
from django_otp import match_token

from accounts.decorators import refuse
from accounts.forms import AuditSearchForm, TokenForm
from accounts.roles import Role, has_role, requires_second_factor
from accounts.second_factor import (
    has_confirmed_device,
    provisioning_qr_svg,
    totp_device_confirm,
    totp_device_pending,
)
from accounts.selectors import audit_entries, can_read_audit_log
from facilities.selectors import facilities_visible_to


class LoginView(auth_views.LoginView):
    template_name = "accounts/login.html"
    redirect_authenticated_user = True

    def get_context_data(self, **kwargs):
        return super().get_context_data(idle_minutes=settings.READROOM_IDLE_TIMEOUT_MINUTES, **kwargs)

    def get_default_redirect_url(self) -> str:
        return landing_url(self.request.user)


def landing_url(user) -> str:
    """Where signing in lands without a ``next``: a radiologist's work is the worklist (issue 14: not a
    welcome page); everyone else's home lists their facilities and role."""
    if user.is_authenticated and has_role(user, Role.RADIOLOGIST):
        return reverse("worklist:reader")  # by name: accounts imports no higher app
    return reverse("accounts:home")


def admin_login_redirect(request: HttpRequest, extra_context=None) -> HttpResponse:
    """The admin uses the one login page (lockout, second factor) instead of its own. A signed-in
    user the admin turned away (not staff) gets a 403 saying so: sending them to the login page,
    which sends a signed-in user on to ``next``, looped (issue 15 §9)."""
    if request.user.is_authenticated:
        return refuse(request, "The administration site is for staff accounts only.")
    return redirect(f"{reverse('accounts:login')}?next={request.get_full_path()}")


def admin_staff_only(admin_view):
    """Wrap ``AdminSite.admin_view``: a signed-in user without admin access is refused with 403 at
    once, on every admin URL, instead of the admin's redirect to its login page."""

    def wrap(view, cacheable: bool = False):
        inner = admin_view(view, cacheable)

        @wraps(view)
        def checked(request: HttpRequest, *args, **kwargs) -> HttpResponse:
            if request.user.is_authenticated and not (request.user.is_active and request.user.is_staff):
                return refuse(request, "The administration site is for staff accounts only.")
            return inner(request, *args, **kwargs)

        return checked

    return wrap


def _safe_next(request: HttpRequest) -> str:
    target = request.POST.get("next") or request.GET.get("next") or ""
    if url_has_allowed_host_and_scheme(target, allowed_hosts={request.get_host()}):
        return target
    return landing_url(request.user)


@login_required
def home(request: HttpRequest) -> HttpResponse:
    context = {
        "facilities": facilities_visible_to(request.user).order_by("name"),
        "is_radiologist": has_role(request.user, Role.RADIOLOGIST),
        "second_factor_required": requires_second_factor(request.user),
    }
    return render(request, "accounts/home.html", context)


@login_required
def verify(request: HttpRequest) -> HttpResponse:
    """Second step of signing in: a code from the enrolled authenticator."""
    if request.user.is_verified():
        return redirect(_safe_next(request))
    if not has_confirmed_device(request.user):
        return redirect("accounts:security")
    form = TokenForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        device = match_token(request.user, form.cleaned_data["token"].strip())
        if device is not None:
            otp_login(request, device)
            return redirect(_safe_next(request))
        form.add_error("token", "That code is not valid. Check the time on your phone and try the new code.")
    return render(request, "accounts/verify.html", {"form": form, "next": _safe_next(request)})


@login_required
def security(request: HttpRequest) -> HttpResponse:
    """Enrol a TOTP authenticator. Radiologists and the medical director must before anything else."""
    if has_confirmed_device(request.user):
        return render(request, "accounts/security.html", {"enrolled": True})
    device = totp_device_pending(request.user)
    form = TokenForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        if totp_device_confirm(device=device, token=form.cleaned_data["token"]):
            otp_login(request, device)
            messages.success(request, "Your authenticator is enrolled.")
            return redirect(_safe_next(request))
        form.add_error("token", "That code does not match. Scan the code again and enter the newest code.")
    context = {
        "enrolled": False,
        "form": form,
        "qr_svg": provisioning_qr_svg(device),
        "secret_base32": _base32(device),
        "required": requires_second_factor(request.user),
        "next": _safe_next(request),
    }
    return render(request, "accounts/security.html", context)


def _base32(device) -> str:
    return base64.b32encode(device.bin_key).decode().rstrip("=")


@login_required
def audit_log(request: HttpRequest) -> HttpResponse:
    if not can_read_audit_log(request.user):
        return render(
            request,
            "403.html",
            {"reason": "The audit log is for operations and the medical director."},
            status=403,
        )
    form = AuditSearchForm(request.GET or None)
    entries = audit_entries()
    if form.is_valid():
        data = form.cleaned_data
        entries = audit_entries(
            patient=data["patient"].strip(),
            username=data["user"].strip(),
            date_from=data["date_from"],
            date_to=data["date_to"],
            action=data["action"],
            object_text=data["object"].strip(),
            facility_id=data["facility"].pk if data["facility"] else None,
        )
    elif form.is_bound:
        entries = entries.none()
    page = Paginator(entries, 50).get_page(request.GET.get("page"))
    page.object_list = _with_zones(list(page.object_list))
    template = "accounts/_audit_rows.html" if request.htmx else "accounts/audit_log.html"
    return render(request, template, {"form": form, "page": page})


def _with_zones(entries: list) -> list:
    """Each row's time in its facility's zone (the facility recorded with the row), else UTC: the
    same words as the facility's own pages."""
    from facilities.models import Facility

    ids = {(e.additional_data or {}).get("facility_id") for e in entries} - {None}
    zones = {f.pk: f.zone for f in Facility.objects.filter(pk__in=ids)}
    for entry in entries:
        entry.zone = zones.get((entry.additional_data or {}).get("facility_id"))
    return entries
