"""Celosia: compile transformer and MoE models to FPGA hardware."""
