"""The fuzz suite's helpers: mutators, seeds, the persistent worker and its client.

See tests/test_fuzz.py.
"""
