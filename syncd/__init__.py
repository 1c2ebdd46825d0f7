"""syncd: MongoDB -> ATProto sync daemon."""

__version__ = "0.1.0"
