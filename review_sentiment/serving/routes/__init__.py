"""The service's routes, one module per concern; each reads what it serves with through the
dependencies in `state` (the app's state), so a route can be mounted on a test app of its own."""
