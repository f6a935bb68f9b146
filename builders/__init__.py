"""Builders turn a source tree into an artifact: static sites through npm, images through Docker."""
