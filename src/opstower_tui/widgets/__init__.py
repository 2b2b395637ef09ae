"""Widgets that render what the engine reports: tables, step lists, bars, panels."""
