"""``python -m aog_plugins.examples`` prints the echo example plugin's script path;
``--copy-to DIR`` writes a runnable copy of it as ``DIR/echo`` (a plugins directory with
one plugin, see :func:`aog_plugins.examples.install_example`) and prints that directory.

The script itself is handed to a host with the interpreter that has aog-plugins, e.g.
``aog-plugins inspect "$(command -v python)" --plugin-arg "$(python -m aog_plugins.examples)"``;
the copy runs as it is: ``aog-plugins inspect DIR/echo``, ``aog-plugins list DIR``.
"""

import argparse

from aog_plugins.examples import ECHO_DIR, install_example

parser = argparse.ArgumentParser(prog="python -m aog_plugins.examples", description=__doc__)
parser.add_argument(
    "--copy-to", metavar="DIR", help="write a runnable copy of the echo plugin into DIR/echo"
)
args = parser.parse_args()
if args.copy_to:
    print(install_example(args.copy_to))
else:
    print(ECHO_DIR / "plugin.py")
