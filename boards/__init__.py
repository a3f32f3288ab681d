"""Celosia boards package."""
