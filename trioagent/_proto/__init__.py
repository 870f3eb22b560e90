"""Sans-IO wire protocols: bytes in, events out. Nothing here imports trio."""
