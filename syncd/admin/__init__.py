"""Admin commands: reconcile, wipe, restore, dead letters (dry run by default)."""
