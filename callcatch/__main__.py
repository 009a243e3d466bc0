import sys

from callcatch.cli import main

sys.exit(main())
