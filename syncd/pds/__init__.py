"""Talking to the PDS: XRPC transport, sessions, and the repository operations syncd uses."""
