"""Webhook endpoints and their delivery log (issue 15)."""
