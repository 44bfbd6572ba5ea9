"""Applications on top of the kcm library: the command line (it may import flows/ and
prefect; the library never does)."""
