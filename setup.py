from setuptools import find_packages, setup

# dagster-aws and dagster-postgres pin an exact dagster: the three move together.
DAGSTER = "1.13.27"
DAGSTER_LIBS = "0.29.27"

setup(
    name="bulk_changes",
    version="0.1.0",
    description="Bulk device changes across Jasper, Telegence, Rev.io and the AMOP database, on Dagster",
    packages=find_packages(exclude=["bulk_changes_tests*", "bench*"]),
    package_data={
        "bulk_changes": [
            "schemas/*.json",
            "defaults/*.yaml",
            "defaults/*.csv",
            "templates/email/*",
        ]
    },
    python_requires=">=3.11",
    install_requires=[
        f"dagster=={DAGSTER}",
        f"dagster-webserver=={DAGSTER}",
        f"dagster-aws=={DAGSTER_LIBS}",
        f"dagster-postgres=={DAGSTER_LIBS}",
        "pandas>=2.2",
        # .xlsx request files and exports, read and written through pandas
        "openpyxl>=3.1",
        "SQLAlchemy>=2.0",
        "psycopg2-binary>=2.9",
        "requests>=2.31",
        # imported directly (the HTTP connection pool's limits); requests brings it too
        "urllib3>=2.0",
        "boto3>=1.34",
        # imported directly (its exceptions); boto3 brings it too
        "botocore>=1.34",
        "PyYAML>=6.0",
        # the tenants file and the queue messages are read by pydantic models
        # (bulk_changes/schemas); pydantic-core, imported for its custom errors, is pinned
        # by pydantic itself
        "pydantic>=2.7,<3",
        "pydantic-core",
        # the emails' templates (autoescaped HTML)
        "Jinja2>=3.1",
        # The embedded default's queue is a local SQS-compatible server (moto's), so the
        # code path on one machine is the same SQS path as in production.
        "moto[server]>=5.0",
        # imported directly (the code server's idle wait, bulk_changes/code_server.py);
        # dagster brings it too
        "grpcio",
        # imported directly (a UPath made once in the fork server, run_worker_preload.py);
        # dagster brings it too
        "universal_pathlib",
    ],
    extras_require={
        "dev": [
            "pytest>=8",
            "pytest-timeout>=2.3",
            "ruff>=0.6",
            "mypy>=1.10",
            # the import contract (.importlinter), checked by a unit test
            "import-linter>=2.17",
            "jsonschema>=4.0",
            # the benchmark's plots (bench/, smoke-run by the tests)
            "matplotlib>=3.8",
            # notifications: a real SMTP server in the tests, an independent Standard
            # Webhooks implementation at the test receiver, certificates for STARTTLS/TLS
            "aiosmtpd>=1.4",
            "standardwebhooks>=1.0",
            "trustme>=1.1",
            # property-based tests of intake: any text, bytes or JSON gives an error or a row
            "hypothesis>=6.100",
            # the browser tests: an operator at the Dagster UI, driving the system's
            # chromium (never `playwright install`: its browser download is not used)
            "playwright>=1.40",
        ],
    },
    entry_points={"console_scripts": ["bulk-changes=bulk_changes.cli:main"]},
)
