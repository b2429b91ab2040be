"""SIP signalling above the ``sip/`` core: the SIP application that dispatches
requests, and the per-device trace.
"""
