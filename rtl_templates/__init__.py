"""Celosia rtl_templates package."""
