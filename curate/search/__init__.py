"""Finding samples by text or image: the stored FAISS index over a dataset's CLIP embeddings (index.py), queries
embedded with the CLIP model the embeddings came from (query.py), and an HTML page of the hits (page.py)."""
