"""The MSO workspace and the radiologist's dossier (HTML/HTMX). Views fetch through selectors (which
decide scope), call one service, and render; nothing here touches patient data."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, time

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_POST

from accounts.decorators import refuse, role_required
from credentialing import forms, services
from credentialing.audit import record_document_access
from credentialing.forecast import coverage_forecast
from credentialing.models import (
    BoardCertification,
    DeaRegistration,
    FacilityCredentialing,
    FacilityPrivilege,
    Fellowship,
    MalpracticeCoverage,
    PrivilegeChecklistItem,
    PrivilegeStatus,
    StateLicence,
)
from credentialing.packet import packet_pdf
from credentialing.selectors import (
    access_document_content,
    access_privilege,
    access_profile,
    access_profile_for_upload,
    applications_queue,
    can_manage_credentialing,
    can_read_credentialing,
    can_see_facility_readers,
    dossier,
    expiring_items,
    expiry_windows,
    facilities_for_readers_page,
    facility_readers,
    flagged_readers,
    is_radiologist,
    matrix,
    notifications_for,
    own_profile,
)
from facilities.selectors import access_facility
from imaging.storage import StorageError, encrypted_read

# --- access guards ------------------------------------------------------------------------------


readers_only = role_required(
    can_read_credentialing,
    "Credentialing pages are for credentialing staff, operations and the medical director.",
)
mso_only = role_required(can_manage_credentialing, "Only credentialing staff change credentialing records.")


def _errors_to_form(form, error: ValidationError, default_field: str | None = None) -> None:
    if hasattr(error, "error_dict"):
        for field, errors in error.error_dict.items():
            form.add_error(field if field in form.fields else None, errors)
    else:
        form.add_error(default_field, error)


# --- the workspace ------------------------------------------------------------------------------


@readers_only
def workspace(request: HttpRequest) -> HttpResponse:
    """Radiologists × facilities, coloured by privilege status and days to expiry."""
    facilities, rows = matrix(timezone.now())
    query = request.GET.get("q", "").strip().lower()
    if query:
        rows = [row for row in rows if query in str(row[0]).lower() or query in row[0].user.username.lower()]
    context = {
        "facilities": facilities,
        "rows": rows,
        "query": query,
        "can_manage": can_manage_credentialing(request.user),
        "unread": notifications_for(request.user, unread_only=True).count(),
    }
    template = "credentialing/_matrix.html" if request.htmx else "credentialing/workspace.html"
    return render(request, template, context)


@readers_only
def applications(request: HttpRequest) -> HttpResponse:
    return render(
        request, "credentialing/applications.html", {"applications": applications_queue(timezone.now())}
    )


@readers_only
def expiring(request: HttpRequest) -> HttpResponse:
    try:
        within = int(request.GET.get("within", 90))
    except ValueError:
        within = 90
    windows = expiry_windows()
    within = within if within in windows else max(windows, default=90)
    now = timezone.now()
    context = {
        "within": within,
        "windows": windows,
        "items": expiring_items(now, within_days=within, include_overdue=False),
        "overdue": [i for i in expiring_items(now, within_days=0) if i.overdue],
    }
    template = "credentialing/_expiring_rows.html" if request.htmx else "credentialing/expiring.html"
    return render(request, template, context)


@readers_only
def forecast(request: HttpRequest) -> HttpResponse:
    now = timezone.now()
    context = {"gaps": coverage_forecast(now), "flagged": flagged_readers(now)}
    return render(request, "credentialing/forecast.html", context)


@login_required
def notifications(request: HttpRequest) -> HttpResponse:
    if request.method == "POST":
        notifications_for(request.user, unread_only=True).filter(pk__in=request.POST.getlist("id")).update(
            read_at=timezone.now()
        )
        if request.htmx:
            return HttpResponse("")
        return redirect("credentialing:notifications")
    return render(
        request, "credentialing/notifications.html", {"notifications": notifications_for(request.user)[:200]}
    )


# --- dossiers ---------------------------------------------------------------------------------


@login_required
def my_profile(request: HttpRequest) -> HttpResponse:
    """A radiologist's own dossier, read-only, with renewal uploads."""
    if not is_radiologist(request.user):
        return refuse(request, "Only radiologists have a reading profile.")
    profile = own_profile(request.user)
    if profile is None:
        return render(request, "credentialing/my_profile.html", {"profile": None})
    return _render_dossier(request, profile)


@login_required
def profile_detail(request: HttpRequest, profile_id: int) -> HttpResponse:
    return _render_dossier(request, access_profile(request.user, profile_id))


def _render_dossier(request: HttpRequest, profile, upload_form=None, status: int = 200) -> HttpResponse:
    context = dossier(profile)
    context.update(
        can_manage=can_manage_credentialing(request.user),
        can_upload=can_manage_credentialing(request.user) or profile.user_id == request.user.pk,
        can_download=can_manage_credentialing(request.user) or profile.user_id == request.user.pk,
        upload_form=upload_form or forms.DocumentUploadForm(),
        facilities=facilities_for_readers_page(request.user)
        if can_manage_credentialing(request.user)
        else [],
        today=timezone.localdate(),
    )
    return render(request, "credentialing/dossier.html", context, status=status)


@mso_only
def profile_new(request: HttpRequest) -> HttpResponse:
    form = forms.ProfileOpenForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            profile = services.profile_open(
                actor=request.user,
                user=form.cleaned_data["user"],
                npi=form.cleaned_data["npi"],
                subspecialties=form.cleaned_data["subspecialties"],
            )
        except ValidationError as error:
            _errors_to_form(form, error)
        else:
            return redirect("credentialing:profile", profile.pk)
    return render(request, "credentialing/record_form.html", {"form": form, "title": "Open a dossier"})


@mso_only
def profile_edit(request: HttpRequest, profile_id: int) -> HttpResponse:
    profile = access_profile(request.user, profile_id)
    form = forms.ProfileForm(request.POST or None, instance=profile)
    if request.method == "POST" and form.is_valid():
        try:
            services.profile_update(
                actor=request.user,
                profile=profile,
                npi=form.cleaned_data["npi"],
                subspecialties=form.cleaned_data["subspecialties"],
            )
        except ValidationError as error:
            _errors_to_form(form, error)
        else:
            messages.success(request, "Profile saved.")
            return redirect("credentialing:profile", profile.pk)
    context = {"form": form, "title": f"Reading profile of {profile}", "profile": profile}
    return render(request, "credentialing/record_form.html", context)


@dataclass(frozen=True)
class RecordKind:
    """One kind of dossier record: its form and the services that write it."""

    model: type
    form: type
    create: Callable
    update: Callable
    instance_kw: str
    title: str


RECORDS: dict[str, RecordKind] = {
    "licences": RecordKind(
        StateLicence,
        forms.LicenceForm,
        services.licence_record,
        services.licence_update,
        "licence",
        "state licence",
    ),
    "boards": RecordKind(
        BoardCertification,
        forms.BoardForm,
        services.board_record,
        services.board_update,
        "board",
        "board certification",
    ),
    "fellowships": RecordKind(
        Fellowship,
        forms.FellowshipForm,
        services.fellowship_record,
        services.fellowship_update,
        "fellowship",
        "fellowship",
    ),
    "dea": RecordKind(
        DeaRegistration, forms.DeaForm, services.dea_record, services.dea_update, "dea", "DEA registration"
    ),
    "malpractice": RecordKind(
        MalpracticeCoverage,
        forms.MalpracticeForm,
        services.malpractice_record,
        services.malpractice_update,
        "coverage",
        "malpractice coverage",
    ),
}


def _record_kind(kind: str) -> RecordKind:
    if kind not in RECORDS:
        raise Http404("No such record kind")
    return RECORDS[kind]


@mso_only
def record_edit(request: HttpRequest, profile_id: int, kind: str, pk: int | None = None) -> HttpResponse:
    """Add or change a licence, board, fellowship, DEA registration or malpractice coverage."""
    profile = access_profile(request.user, profile_id)
    spec = _record_kind(kind)
    instance = get_object_or_404(spec.model, pk=pk, profile=profile) if pk else None
    form = spec.form(request.POST or None, instance=instance)
    if request.method == "POST" and form.is_valid():
        fields = {name: form.cleaned_data[name] for name in form.Meta.fields}
        try:
            if instance is None:
                spec.create(actor=request.user, profile=profile, **fields)
            else:
                spec.update(actor=request.user, **{spec.instance_kw: instance}, **fields)
        except ValidationError as error:
            _errors_to_form(form, error)
        else:
            messages.success(request, f"The {spec.title} is saved.")
            return redirect("credentialing:profile", profile.pk)
    verb = "Change" if instance else "Add"
    context = {"form": form, "title": f"{verb} a {spec.title} — {profile}", "profile": profile}
    return render(request, "credentialing/record_form.html", context)


@mso_only
def record_verify(request: HttpRequest, profile_id: int, kind: str, pk: int) -> HttpResponse:
    """Record the primary-source verification of one record."""
    profile = access_profile(request.user, profile_id)
    spec = _record_kind(kind)
    record = get_object_or_404(spec.model, pk=pk, profile=profile)
    form = forms.VerificationForm(request.POST or None, profile=profile)
    if request.method == "POST" and form.is_valid():
        data = form.cleaned_data
        verified_at = timezone.make_aware(datetime.combine(data["verified_on"], time(12)))
        try:
            services.credential_verify(
                actor=request.user,
                credential=record,
                method=data["method"],
                document=data["document"],
                note=data["note"],
                verified_at=verified_at,
            )
        except ValidationError as error:
            _errors_to_form(form, error)
        else:
            messages.success(request, f"Verification of {record} recorded.")
            return redirect("credentialing:profile", profile.pk)
    context = {"form": form, "title": f"Verify {record} with its primary source", "profile": profile}
    return render(request, "credentialing/record_form.html", context)


# --- documents --------------------------------------------------------------------------------


@login_required
@require_POST
def document_upload(request: HttpRequest, profile_id: int) -> HttpResponse:
    profile = access_profile_for_upload(request.user, profile_id)
    form = forms.DocumentUploadForm(request.POST, request.FILES)
    if form.is_valid():
        try:
            services.document_upload(
                actor=request.user,
                profile=profile,
                upload=form.cleaned_data["file"],
                kind=form.cleaned_data["kind"],
                title=form.cleaned_data["title"],
            )
        except ValidationError as error:
            form.add_error("file", error)
        else:
            messages.success(request, "Document uploaded. Credentialing staff will review it.")
            return redirect(_dossier_url(request, profile) + "#documents")
    return _render_dossier(request, profile, upload_form=form, status=400)


def _dossier_url(request: HttpRequest, profile) -> str:
    if profile.user_id == request.user.pk and not can_manage_credentialing(request.user):
        return reverse("credentialing:my_profile")
    return reverse("credentialing:profile", args=[profile.pk])


@login_required
def document_download(request: HttpRequest, document_id: int) -> HttpResponse:
    """The decrypted file, to credentialing staff and its owner only; every download is audited."""
    document = access_document_content(request.user, document_id)
    try:
        content = encrypted_read(document.storage_path)
    except StorageError:
        return render(
            request,
            "403.html",
            {"reason": "This document's file is missing or damaged. Upload it again."},
            status=410,
        )
    record_document_access(document)
    response = HttpResponse(content, content_type=document.content_type)
    response["Content-Disposition"] = f'attachment; filename="document-{document.pk}.{document.extension}"'
    response["Cache-Control"] = "no-store"
    return response


# --- privileges -------------------------------------------------------------------------------


@mso_only
def privilege_new(request: HttpRequest, profile_id: int) -> HttpResponse:
    profile = access_profile(request.user, profile_id)
    form = forms.PrivilegeApplyForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        data = form.cleaned_data
        try:
            privilege = services.privilege_apply(
                actor=request.user,
                profile=profile,
                facility=data["facility"],
                applied_on=data["applied_on"],
                scope_subspecialties=data["scope_subspecialties"],
                scope_modalities=data["scope_modalities"],
            )
        except ValidationError as error:
            _errors_to_form(form, error)
        else:
            return redirect("credentialing:privilege", privilege.pk)
    context = {"form": form, "title": f"Apply for privileges — {profile}", "profile": profile}
    return render(request, "credentialing/record_form.html", context)


@login_required
def privilege_detail(request: HttpRequest, privilege_id: int) -> HttpResponse:
    privilege = access_privilege(request.user, privilege_id)
    if not (can_read_credentialing(request.user) or privilege.profile.user_id == request.user.pk):
        raise Http404("No such privilege")
    return render(request, "credentialing/privilege.html", _privilege_context(request, privilege))


def _privilege_context(request: HttpRequest, privilege: FacilityPrivilege, **forms_given) -> dict:
    status = privilege.status
    open_application = status in (PrivilegeStatus.APPLIED, PrivilegeStatus.IN_REVIEW)
    return {
        "privilege": privilege,
        "checklist": list(privilege.checklist.select_related("completed_by")),
        "can_manage": can_manage_credentialing(request.user),
        "open_application": open_application,
        "actions": services.TRANSITIONS[status],
        "Status": PrivilegeStatus,
        "grant_form": forms_given.get("approve") or forms.GrantForm(),
        "proxy_form": forms_given.get("approve_by_proxy") or forms.ProxyGrantForm(),
        "deny_form": forms_given.get("deny") or forms.NoteForm(),
        "lapse_form": forms_given.get("lapse") or forms.NoteForm(),
        "reappoint_form": forms_given.get("reappoint") or forms.GrantForm(),
        "scope_form": forms_given.get("scope")
        or forms.ScopeForm(
            initial={
                "subspecialties": privilege.scope_subspecialties.all(),
                "modalities": privilege.scope_modalities,
            }
        ),
        "checklist_form": forms.ChecklistAddForm(),
        "action_error": forms_given.get("error"),
    }


# action name → (form class, service call from cleaned data)
PRIVILEGE_ACTIONS: dict[str, tuple[type | None, Callable]] = {
    "review": (None, lambda actor, p, d: services.privilege_review_start(actor=actor, privilege=p)),
    "approve": (
        forms.GrantForm,
        lambda actor, p, d: services.privilege_approve(actor=actor, privilege=p, **d),
    ),
    "approve_by_proxy": (
        forms.ProxyGrantForm,
        lambda actor, p, d: services.privilege_approve_by_proxy(actor=actor, privilege=p, **d),
    ),
    "deny": (
        forms.NoteForm,
        lambda actor, p, d: services.privilege_deny(actor=actor, privilege=p, note=d["note"]),
    ),
    "lapse": (
        forms.NoteForm,
        lambda actor, p, d: services.privilege_lapse(actor=actor, privilege=p, note=d["note"]),
    ),
    "reappoint": (
        forms.GrantForm,
        lambda actor, p, d: services.privilege_reappoint(actor=actor, privilege=p, **d),
    ),
    "scope": (
        forms.ScopeForm,
        lambda actor, p, d: services.privilege_scope_set(
            actor=actor, privilege=p, subspecialties=d["subspecialties"], modalities=d["modalities"]
        ),
    ),
}


@mso_only
@require_POST
def privilege_action(request: HttpRequest, privilege_id: int, action: str) -> HttpResponse:
    privilege = access_privilege(request.user, privilege_id)
    if action not in PRIVILEGE_ACTIONS:
        raise Http404("No such action")
    form_class, call = PRIVILEGE_ACTIONS[action]
    form = form_class(request.POST) if form_class else None
    if form is None or form.is_valid():
        try:
            call(request.user, privilege, form.cleaned_data if form else {})
        except ValidationError as error:
            context = _privilege_context(request, privilege, error=" ".join(error.messages))
            return render(request, "credentialing/privilege.html", context, status=409)
        messages.success(
            request, f"Privileges at {privilege.facility.name}: {privilege.get_status_display()}."
        )
        return redirect("credentialing:privilege", privilege.pk)
    context = _privilege_context(request, privilege, **{action: form})
    return render(request, "credentialing/privilege.html", context, status=400)


@mso_only
@require_POST
def checklist_toggle(request: HttpRequest, item_id: int) -> HttpResponse:
    """Complete (or reopen) one checklist item; HTMX swaps just that row."""
    item = get_object_or_404(PrivilegeChecklistItem.objects.select_related("privilege"), pk=item_id)
    access_privilege(request.user, item.privilege_id)
    error = None
    try:
        if item.is_complete:
            services.checklist_item_reopen(actor=request.user, item=item)
        else:
            services.checklist_item_complete(actor=request.user, item=item, note=request.POST.get("note", ""))
    except ValidationError as exc:
        error = " ".join(exc.messages)
    if request.htmx:
        item.refresh_from_db()
        context = {"item": item, "can_manage": True, "open_application": True, "error": error}
        return render(request, "credentialing/_checklist_item.html", context)
    if error:
        messages.error(request, error)
    return redirect("credentialing:privilege", item.privilege_id)


@mso_only
@require_POST
def checklist_add(request: HttpRequest, privilege_id: int) -> HttpResponse:
    privilege = access_privilege(request.user, privilege_id)
    form = forms.ChecklistAddForm(request.POST)
    if form.is_valid():
        try:
            services.checklist_item_add(
                actor=request.user, privilege=privilege, label=form.cleaned_data["label"]
            )
        except ValidationError as error:
            messages.error(request, " ".join(error.messages))
    return redirect("credentialing:privilege", privilege.pk)


# --- facilities -------------------------------------------------------------------------------


@readers_only
def facility_settings(request: HttpRequest, code: str) -> HttpResponse:
    facility = access_facility(request.user, code)
    row = FacilityCredentialing.objects.filter(facility=facility).first() or FacilityCredentialing(
        facility=facility
    )
    labels = services.required_checklist_labels(facility)
    can_manage = can_manage_credentialing(request.user)
    form = forms.FacilityCredentialingForm(
        request.POST if request.method == "POST" and can_manage else None,
        instance=row,
        initial={
            "requirements": "\n".join(labels),
            "reads_before_verification": facility.reads_before_verification,
        },
    )
    if request.method == "POST" and can_manage and form.is_valid():
        fields = {name: form.cleaned_data[name] for name in form.Meta.fields}
        try:
            services.facility_credentialing_update(actor=request.user, facility=facility, **fields)
            services.facility_requirements_set(
                actor=request.user, facility=facility, labels=form.cleaned_data["requirements"].splitlines()
            )
            services.facility_verification_policy_set(
                actor=request.user,
                facility=facility,
                reads_before_verification=form.cleaned_data["reads_before_verification"],
            )
        except ValidationError as error:
            _errors_to_form(form, error)
        else:
            messages.success(request, f"Credentialing settings of {facility.name} saved.")
            return redirect("credentialing:facility_settings", facility.code)
    context = {"facility": facility, "form": form, "labels": labels, "can_manage": can_manage}
    return render(request, "credentialing/facility_settings.html", context)


@login_required
def readers(request: HttpRequest) -> HttpResponse:
    """Which readers hold privileges (or have applied) at the facilities the user may see here —
    a facility admin only their own."""
    if not can_see_facility_readers(request.user):
        return refuse(request, "This page is for facility admins and credentialing staff.")
    now = timezone.now()
    facilities = facilities_for_readers_page(request.user).order_by("name")
    code = request.GET.get("facility")
    if code:
        facilities = facilities.filter(code=code)
        if not facilities:
            raise Http404("No such facility")  # another client's facility looks like a missing one
    sections = [(f, facility_readers(f), f.zone) for f in facilities]
    return render(request, "credentialing/readers.html", {"sections": sections, "now": now})


@mso_only
def packet(request: HttpRequest, profile_id: int, code: str) -> HttpResponse:
    """The credentialing packet PDF for one radiologist and one facility."""
    profile = access_profile(request.user, profile_id)
    facility = access_facility(request.user, code)
    pdf = packet_pdf(profile=profile, facility=facility, at=timezone.now())
    filename = f"packet-{profile.user.username}-{facility.code}.pdf"
    response = HttpResponse(pdf, content_type="application/pdf")
    response["Content-Disposition"] = f'attachment; filename="{filename}"'
    response["Cache-Control"] = "no-store"
    return response
