"""Facts about the host a store lives on: processes (/proc), private paths, host-level checks."""
