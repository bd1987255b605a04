"""Registry use cases: blobs, uploads, manifests, tags, referrers, catalog. No HTTP here."""
