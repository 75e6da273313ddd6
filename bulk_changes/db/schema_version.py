"""The newest AMOP schema version, apart from the schema itself (which needs SQLAlchemy):
the command line checks a database's version without importing SQLAlchemy
(``db.dbapi``). A new upgrade in ``db.schema.UPGRADES`` moves this number; a unit test
keeps the two equal."""

LATEST = 6
