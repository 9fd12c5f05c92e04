"""``python -m marker_ls_plugin.cli``: the same as the ``marker-ls`` console script."""

import sys

from marker_ls_plugin.cli import main

sys.exit(main())
