"""The evidence bundle: a signed zip an auditor can check with or without commsaudit."""
