"""Streaming outputs to clients: HTTP-FLV, HLS and snapshot routes (``http.py``), live RTSP (``rtsp.py``).

The muxers themselves are sans-IO in ``media/`` (``media.flv``, ``media.hls``, the RTSP server).
"""
