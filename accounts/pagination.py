"""The API's ``limit``/``offset`` pagination with a bounded offset (issue 15 §2).

DRF's ``LimitOffsetPagination`` passes any positive integer to the database, and an offset beyond
PostgreSQL's bigint was a 500 ("bigint out of range"). No list holds a million rows for one caller,
so a larger offset is a 400 that says so."""

from __future__ import annotations

from rest_framework.exceptions import ValidationError
from rest_framework.pagination import LimitOffsetPagination

MAX_OFFSET = 1_000_000


class BoundedLimitOffsetPagination(LimitOffsetPagination):
    max_limit = 1000

    def get_offset(self, request) -> int:
        offset = super().get_offset(request)
        if offset > MAX_OFFSET:
            raise ValidationError({self.offset_query_param: f"must be at most {MAX_OFFSET}"})
        return offset

    def get_schema_operation_parameters(self, view):
        parameters = super().get_schema_operation_parameters(view)
        for parameter in parameters:
            if parameter["name"] == self.offset_query_param:
                parameter["schema"]["maximum"] = MAX_OFFSET
            if parameter["name"] == self.limit_query_param:
                parameter["schema"]["maximum"] = self.max_limit
        return parameters
