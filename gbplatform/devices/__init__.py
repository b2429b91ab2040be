"""Devices: registration (the registrar), the brute-force guard, onboarding queries
and the catalog; their API is ``http.py``.
"""
