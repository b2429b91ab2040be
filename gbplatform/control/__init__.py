"""Device control (GB/T 28181-2016 §9.3, Annex A.3): PTZ, lens, presets, cruise, scan, aux switches;
the other DeviceControl commands; device configuration (DeviceConfig, ConfigDownload, §A.2.3.2, §A.2.4.7).

``service.py`` sends the A.3 commands (``sip.ptz``) to the device owning a
channel and waits for its answer; ``http.py`` is the API; ``shapes.py`` its bodies.
The GB/T 28181-2022 PTZ commands (PTZPreciseCtrl, PTZPosition, HomePositionQuery,
cruise tracks, TargetTrack) are ``ptz2022.py``, ``http_2022.py``, ``shapes_2022.py``
and ``openapi_2022.py``.
"""
