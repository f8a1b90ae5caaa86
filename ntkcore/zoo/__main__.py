"""``python -m ntkcore.zoo``: see :mod:`ntkcore.zoo.cli`."""

import sys

from ntkcore.zoo.cli import main

sys.exit(main())
