"""``python -m aog_plugins`` runs the CLI (the same as the ``aog-plugins`` command)."""

from aog_plugins.cli import main

raise SystemExit(main())
