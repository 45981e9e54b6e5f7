"""``python -m aog_plugins.examples`` prints the echo example plugin's path.

It is a Python script: hand it to a host with the interpreter that has aog-plugins, e.g.
``aog-plugins inspect "$(command -v python)" --plugin-arg "$(python -m aog_plugins.examples)"``.
"""

from aog_plugins.examples import ECHO_DIR

print(ECHO_DIR / "plugin.py")
