"""Dev and test only: a local "world" (real PDS, MongoDB replica-set sandbox, image server)."""
