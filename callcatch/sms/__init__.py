"""The modem side: the AT transport, PDUs, the outbox workers and the inbox."""
