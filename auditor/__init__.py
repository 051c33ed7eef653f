"""commsaudit: policy-as-code auditor for communication platforms."""

__version__ = "0.1.0"

import time as _time

# When the package was first imported: the start of a run's "startup" phase (imports, config,
# policies), which the manifest's timings report.
STARTED = _time.perf_counter()
