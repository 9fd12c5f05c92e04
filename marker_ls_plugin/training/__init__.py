"""Fine-tuning: arguments, loop and metrics. Nothing in this package imports Django."""
