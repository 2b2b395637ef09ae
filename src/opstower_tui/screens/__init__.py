"""The console's screens: dashboard, backups, verify, restore wizard, runs and help."""
