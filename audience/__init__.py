"""Audience: age group and gender classification on the Adience benchmark."""

__version__ = "0.1.0"
