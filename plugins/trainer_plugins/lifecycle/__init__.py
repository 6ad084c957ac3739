"""Model lifecycle plugins: versions registered after training, and the promotion gate."""
