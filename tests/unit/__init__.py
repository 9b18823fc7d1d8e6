"""Pure tests: the fold and its properties, the contracts, throttles, logs, the deployment files. Seconds."""
