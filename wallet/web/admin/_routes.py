"""Route modules of this blueprint, imported once so they register on `bp`."""
