from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

from accounts.roles import Role, has_role
from credentialing.models import RadiologistProfile


@login_required
def my_profile(request: HttpRequest) -> HttpResponse:
    """A radiologist's own reading identity, read-only."""
    if not has_role(request.user, Role.RADIOLOGIST):
        return render(
            request, "403.html", {"reason": "Only radiologists have a reading profile."}, status=403
        )
    profile = RadiologistProfile.objects.filter(user=request.user).prefetch_related("subspecialties").first()
    return render(request, "credentialing/my_profile.html", {"profile": profile})
