"""Replaying captured traffic through an emulated network (`pktemu replay`).

`frames` parses and checks captured frames, `mapping` rewrites their addresses onto the topology,
`split` decides which side of each flow is replayed, `tcpfollow` keeps replayed TCP valid against
the emulated servers' answers, `timing` places packets on the virtual clock, `engine` injects them
and stands in for the replaced namespace, `stats` counts, and `run` writes the output directory.
"""
