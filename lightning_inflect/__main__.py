"""``python -m lightning_inflect``: the same command as ``lightning-inflect``."""

from lightning_inflect.cli import main

main()
