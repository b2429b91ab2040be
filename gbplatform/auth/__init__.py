"""Authorisation of clients: the scoped playback tokens."""
