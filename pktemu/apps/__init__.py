"""Pod applications. Importing this package registers the built-in app kinds."""
from pktemu.apps import dns, http, ping  # noqa: F401  (each module registers its kinds on import)
