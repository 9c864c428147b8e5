"""Use cases shared by the web app and the CLI: load → core → save → commit once.

Each public function is one user intent. It validates input, calls the pure core,
writes through `wallet.store`, and commits exactly once through `atomic`, so a
multi-step change is all or nothing. Errors are `WalletError`s with stable codes.
"""
