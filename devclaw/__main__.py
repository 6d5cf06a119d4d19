import sys

from devclaw.cli import main

sys.exit(main())
