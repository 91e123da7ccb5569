"""Fast tests: no model weights, worker process, server, browser or database server."""
