"""Shared foundations: settings, errors, identifiers and time helpers."""
