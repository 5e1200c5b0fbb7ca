"""Logs, metrics and the audit trail: what operators see of the provider."""
