"""What runs the loop but is not the algorithm: building the players and the sandbox, config parsing,
checkpoints, loading and export, metrics and trackers, multi-process set-up, command-line helpers."""
