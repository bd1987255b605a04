"""HTTP layer for /v2: routes, handlers, error mapping. No storage details here."""
