"""INVITE sessions with devices: live video now; playback, download and talk next."""
