"""commsaudit: policy-as-code auditor for communication platforms."""

__version__ = "0.1.0"
