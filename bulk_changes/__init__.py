"""bulk_changes: bulk device changes across carriers, billing and the AMOP database."""
