"""specalign: measure, explain and raise draft-token acceptance in speculative decoding."""

__version__ = "0.1.0"
