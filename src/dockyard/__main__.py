"""`python -m dockyard` runs the command line."""

from dockyard.cli.main import main

main()
