"""gbplatform: a GB/T 28181 video surveillance platform."""

__version__ = "0.1.0"
