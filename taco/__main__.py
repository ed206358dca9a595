"""`python -m taco` is the `taco` command."""

from taco.cli import main

main()
