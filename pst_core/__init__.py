"""pst_core: the maths and I/O of partitioned neural style transfer (no Prefect here)."""

__version__ = "0.1.0"
