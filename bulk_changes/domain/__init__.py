"""Pure domain: no Dagster, requests or SQLAlchemy here."""
