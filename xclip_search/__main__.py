"""``python -m xclip_search`` runs the command line (same as the ``xclip-search`` script)."""

from .cli import main

main()
