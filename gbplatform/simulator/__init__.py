"""The GB/T 28181 device simulator (``gbplatform simulate``), kept out of what
``gbplatform run`` imports.
"""
