"""Runtime: the edge client, the split server, the wire protocol, and the Triton
model-repository export."""
