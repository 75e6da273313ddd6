"""The AMOP database: SQLite by default, PostgreSQL by URL."""
