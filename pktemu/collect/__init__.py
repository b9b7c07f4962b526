"""The node collector script (`pktemu collect --print-script`), shipped as package data."""
