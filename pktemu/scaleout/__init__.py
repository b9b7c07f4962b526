"""Many scenario runs at once: `pktemu run --workers/--scheduler` and `pktemu sweep`.

`jobs` runs one scenario as a pure task (bytes out, nothing written), `executor` runs jobs in this
process or on a Dask cluster and gives their results back in job order, `write` writes a result
atomically on the client, `aggregate` turns a sweep's results into counts and percentiles, `runner`
puts them together for the commands; `workerinit` is the local workers' Dask preload.
"""
