import sys
from rdtcourse.cli import main

sys.exit(main())
