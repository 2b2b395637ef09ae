"""Small modal dialogs: errors, yes/no, typed confirmation."""
