"""``python -m aog_plugins`` runs the CLI."""

from aog_plugins.cli import main

raise SystemExit(main())
