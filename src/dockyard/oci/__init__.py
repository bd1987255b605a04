"""Pure OCI domain: digests, names and references, media types, manifest parsing."""
