"""Shared building blocks with no domain of their own.

The clock, GB IDs and SSRCs, error types, worker pools.
"""
