"""`python -m wallet` runs the CLI."""

from wallet.cli import main

main()
