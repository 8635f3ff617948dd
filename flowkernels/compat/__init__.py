"""Drop-in replacements for the classes of the systems flowkernels replaces (same signatures, same results)."""
