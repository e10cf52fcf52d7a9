"""Incoming mail (SPEC I): fetchers (one session per IncomingServer) feed the
pipeline, which turns each mail into a ticket event; the runner drives both."""
