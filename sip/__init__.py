"""Sans-IO SIP stack for GB/T 28181 (RFC 3261 + MANSCDP)."""
