"""The set of backups: the catalog of local and S3 artifacts, retention, downloads."""
