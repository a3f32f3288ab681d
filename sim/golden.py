"""Deprecated location of the golden executors: use :mod:`celosia.ir.golden`."""

from celosia.ir.golden import feed_inputs, run_float, run_int  # noqa: F401

__all__ = ["run_float", "run_int", "feed_inputs"]
