"""Every measurement the project makes: training throughput, prediction latency per image, a model's
CPU latency per face, stability under small changes, accuracy beside a peer, cold start, the GPU report."""
