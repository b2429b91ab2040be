"""Subscriptions to devices' catalog, alarms and positions (GB/T 28181-2016 §9.11, RFC 6665).

``service`` drives one ``sip.subscription.Subscription`` per device and kind and applies catalog
NOTIFYs; ``store`` holds the settings and channel writes; ``http`` and ``shapes`` are the API.
"""
