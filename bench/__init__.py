"""Lapse's benchmark: does access end on the second at thousands of grants? (`make bench`)."""
