import sys

from clobi.cli import main

sys.exit(main())
