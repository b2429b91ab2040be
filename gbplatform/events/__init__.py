"""What devices and the platform report as it happens: the event bus (``bus``), the SSE stream and webhooks."""
