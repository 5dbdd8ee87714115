"""sessiondb on agent frameworks and tools: each module an adapter over the Store contract."""
