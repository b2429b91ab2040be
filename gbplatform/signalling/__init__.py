"""SIP signalling above the ``sip/`` core: the router (registries by SIP method,
MANSCDP CmdType and dialog; SN correlation) and the per-device trace.
"""
