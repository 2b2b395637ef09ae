"""The eight verification checks, by id and title, in order.

Kept apart from verify.py (which pulls in psycopg, boto3 and zstandard) so the console can
draw the list before any of that is imported.
"""

CHECKS: list[tuple[str, str]] = [
    ("exists", "Checking file existence"),
    ("readable", "Checking file readability"),
    ("not_empty", "Checking file is not empty"),
    ("compression", "Testing compression integrity"),
    ("content", "Verifying PostgreSQL dump content"),
    ("metadata", "Checking metadata file"),
    ("s3", "Verifying S3 backup"),
    ("full_restore", "Full restoration test"),
]
