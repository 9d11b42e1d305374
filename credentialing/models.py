"""Credentialing records. The foundation holds the reading identity (profile + subspecialties);
licences, privileges and the eligibility engine build on it (issue: credentialing)."""

from __future__ import annotations

from django.conf import settings
from django.core.validators import RegexValidator
from django.db import models


class Subspecialty(models.Model):
    """A reading subspecialty. Rows are fixed by migration; routing maps procedures onto them."""

    NEURO = "neuro"
    MSK = "msk"
    BODY = "body"
    CHEST = "chest"
    PEDIATRIC = "pediatric"
    BREAST = "breast"
    NUCLEAR = "nuclear"
    GENERAL = "general"

    code = models.SlugField(max_length=32, unique=True)
    name = models.CharField(max_length=100)

    class Meta:
        ordering = ["name"]
        verbose_name_plural = "subspecialties"

    def __str__(self) -> str:
        return self.name


npi_validator = RegexValidator(r"^\d{10}$", "An NPI has 10 digits")


class RadiologistProfile(models.Model):
    user = models.OneToOneField(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="radiologist_profile"
    )
    npi = models.CharField("NPI", max_length=10, blank=True, validators=[npi_validator])
    subspecialties = models.ManyToManyField(Subspecialty, blank=True, related_name="radiologists")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["npi"], condition=~models.Q(npi=""), name="unique_radiologist_npi"
            ),
        ]

    def __str__(self) -> str:
        return str(self.user)
