"""Embedded PostgreSQL and S3 servers, the demo and its sample database.

For the demo, the tests and the benchmarks only: production code never imports this package.
"""
