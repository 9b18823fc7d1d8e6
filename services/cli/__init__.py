"""The `tubeflow` console script: the only layer that knows every service (contracts <- runtime <- services <- cli)."""
