"""`wallet export KIND`: CSV exports for finance (issue 15)."""
