"""The web dashboard: server-rendered pages over the REST API's domain functions (docs/dashboard.md)."""
