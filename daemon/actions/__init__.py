"""Actions: what runs when an event happens. ``runner`` does one action (a command with the event JSON on its
stdin, no shell, killed at its timeout; a webhook POST with retries and backoff; a ZeroMQ request), the one
implementation the door's grant and the ``[[actions]]`` list both use; ``dispatch`` matches events to the
configured actions (topics, sources, identities, score, time windows) and runs them off the pipeline's threads,
rate-limited per action."""
