"""Settings modules.

``radiology.settings.base``       shared by everything; picks the topology from the environment
``radiology.settings.production`` base + refuses to start without real secrets
``radiology.settings.test``       base + fast hashing for the test suite
"""
