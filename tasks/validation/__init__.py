"""What `tasks.validate` runs: tables.py builds the tables (numpy), suites.py runs GX on them."""
