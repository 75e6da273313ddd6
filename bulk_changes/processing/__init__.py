"""Carrying out device changes: step handlers and the stage runner the ops call."""
