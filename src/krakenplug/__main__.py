"""Allows ``python -m krakenplug``."""

import sys

from krakenplug import cli

sys.exit(cli.main())
