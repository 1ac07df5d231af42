"""The HTTP surfaces: Marathon-compatible /v2, status page, auth."""
