"""Delivering the outbox: emails and webhooks, from the AMOP database's outbox tables."""
