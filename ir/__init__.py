"""Celosia ir package."""
