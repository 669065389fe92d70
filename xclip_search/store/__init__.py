"""Where vectors and metadata live: catalog (SQL), vector shards (.npy), ANN cache (FAISS), manifest.

The store never runs a model; the engine and the indexer call it.
"""
