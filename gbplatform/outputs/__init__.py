"""Streaming outputs to clients.

The FLV, HLS and snapshot routes (now in ``gbplatform/api/app.py``) will move here next.
"""
