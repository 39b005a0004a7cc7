"""``python -m mipcandy`` runs the ``candy`` command line."""
import sys

from mipcandy.cli import main

sys.exit(main())
