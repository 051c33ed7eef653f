"""Pulumi stacks as declared state: a stack export, the Automation API, or a program run under
mocks, normalised into the same sections the live AWS connector fills."""
