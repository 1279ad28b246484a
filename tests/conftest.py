"""Every report written during the tests (in-process or by a `sparsify` subprocess, which
inherits the variable) is validated against sparsify/schema/report.schema.json first."""

import os

os.environ["SPARSIFY_VALIDATE_REPORTS"] = "1"
