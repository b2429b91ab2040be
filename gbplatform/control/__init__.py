"""Device control (GB/T 28181-2016 §9.3, Annex A.3): PTZ, lens, presets, cruise, scan, aux switches.

``service.py`` sends the A.3 commands (``sip.ptz``) to the device owning a
channel and waits for its answer; ``http.py`` is the API; ``shapes.py`` its bodies.
"""
