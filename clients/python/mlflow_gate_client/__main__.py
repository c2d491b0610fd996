"""`python -m mlflow_gate_client login | logout | token | whoami`."""

import sys

from .cli import main

sys.exit(main())
