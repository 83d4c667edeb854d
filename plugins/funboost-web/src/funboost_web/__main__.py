import sys

from funboost_web.cli import main

sys.exit(main(sys.argv[1:]))
