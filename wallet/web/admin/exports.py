"""CSV downloads of the admin tables (issue 15)."""
