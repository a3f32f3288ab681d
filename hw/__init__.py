"""Celosia hw package."""
