"""faiss indexes: one per category per day, written atomically with a manifest."""
