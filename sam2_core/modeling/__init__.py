"""SAM 2 network modules. Attribute names follow the official checkpoints so
their state dicts load strictly, unconverted."""
