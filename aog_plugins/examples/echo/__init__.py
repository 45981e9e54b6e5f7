"""The echo example plugin (run ``plugin.py``; see ``plugin.yaml`` for its manifest)."""
