"""Ingestion: parse the knowledge documents, chunk, embed and persist the index."""

import logging

# faiss (imported by ingest.index, in the CLI and the chat server alike) tries its AVX2
# build first and logs the failed import at INFO on machines without it ("No module named
# 'faiss.swigfaiss_avx2'"), though the generic build it falls back to works. Set here, before
# any import of faiss; the loader's warnings and errors are still shown.
logging.getLogger("faiss.loader").setLevel(logging.WARNING)
