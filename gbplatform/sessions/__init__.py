"""INVITE sessions with devices: live video now (``live.py``, its API ``http.py``); playback, download and talk next."""
