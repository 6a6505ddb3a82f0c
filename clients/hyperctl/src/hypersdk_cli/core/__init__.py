"""What hyperctl does, whatever the transport: errors, sessions, job progress."""
