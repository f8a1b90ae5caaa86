"""``python -m ntkcore.experiments``: see :mod:`ntkcore.experiments.cli`."""

import sys

from ntkcore.experiments.cli import main

sys.exit(main())
