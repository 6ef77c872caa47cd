"""relay: the gRPC server that runs jobs."""
