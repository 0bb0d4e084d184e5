"""Small operating-system helpers: thread names and scheduling, UTC time, private files, TLS."""
