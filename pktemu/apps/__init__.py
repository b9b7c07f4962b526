"""Pod applications. Importing this package registers the built-in app kinds."""
