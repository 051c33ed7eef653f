"""Connectors: one subpackage a source. Each reads a platform and hands back raw responses
(kept as evidence) and normalised snapshot sections. None of them knows about policies."""
