"""Our own PyTorch implementation of SAM 2 and SAM 2.1 (no Ray, no storage I/O beyond checkpoint loading)."""
