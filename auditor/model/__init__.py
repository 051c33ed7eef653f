"""The types both sides of the snapshot share: connectors build sections and raise these errors;
the engine, the evidence and the reports read them. It imports neither side."""
