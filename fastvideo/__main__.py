"""``python -m fastvideo`` runs the ``fastvideo`` command line."""

import sys

from fastvideo.serving.cli import main

sys.exit(main())
