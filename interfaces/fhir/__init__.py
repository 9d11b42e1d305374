"""FHIR R4 read endpoints and resource builders (``/fhir/r4/…``, DESIGN.md §5)."""
