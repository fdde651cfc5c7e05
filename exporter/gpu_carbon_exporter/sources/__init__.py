"""Hardware sources. Each reads one kind of device in its native units; none imports Prometheus."""
