"""relay: the job server, tested through a real gRPC server on loopback."""
