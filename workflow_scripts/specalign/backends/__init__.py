"""One backend per model family (see specalign.models)."""
