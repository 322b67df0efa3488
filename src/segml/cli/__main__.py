"""``python -m segml.cli``: the same command line as the ``segml`` script."""

from segml.cli import main

main()
