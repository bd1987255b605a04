"""The web UI: server-rendered pages under /ui/, over `core` services, behind the same
authorization middleware as the API (each route declares its `Access`)."""
