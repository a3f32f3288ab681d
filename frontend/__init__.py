"""Celosia frontend package."""
