"""Pod applications. Importing this package registers the built-in app kinds."""
# each module registers its kinds on import
from pktemu.apps import dns, echo, echo_client, http, http_load, ping, python  # noqa: F401
