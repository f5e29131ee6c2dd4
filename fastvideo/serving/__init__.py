"""Serving: CLI entry points and (later) HTTP/WebSocket apps over the runtime."""
