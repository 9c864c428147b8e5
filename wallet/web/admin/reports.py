"""The liability roll-forward page (issue 15)."""
