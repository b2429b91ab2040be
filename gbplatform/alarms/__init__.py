"""Alarms and mobile positions devices report (GB/T 28181-2016 §9.4, §9.10): storage, API, snapshots."""
