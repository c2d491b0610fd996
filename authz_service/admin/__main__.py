"""`python -m authz_service.admin` runs the same CLI as the `mlflow-gate-admin` script."""

import sys

from .cli import main

sys.exit(main())
