"""Training scripts and PyTorch definitions of the zoo models (need torch; not used at run time)."""
