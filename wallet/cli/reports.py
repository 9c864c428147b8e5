"""`wallet report`: the liability roll-forward for finance (issue 15)."""
