"""Running a split LLM: the server side with its sessions (host), over HTTP (server),
the edge side (client), and what they cost (loadtest)."""
