"""``python -m napari_limnet.evaluation``: the same as ``limnet eval``."""

import sys

from .cli import main

sys.exit(main())
