"""Celosia sim package."""
