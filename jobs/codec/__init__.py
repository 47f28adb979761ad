"""RecordIO-wrapped protobuf (``aialgs.data.Record``), encoded and decoded with numpy.

The bytes are identical to what the SageMaker Python SDK's ``write_numpy_to_dense_tensor`` and
``write_spmatrix_to_sparse_tensor`` write for float32 data. numpy in, bytes out (and back): no
Spark, no boto3, no I/O beyond reading the stream handed to ``iter_batches``.
"""

from .decode import DenseBatch, SparseBatch, concat_batches, decode, iter_batches
from .encode import encode_dense, encode_sparse
from .wire import MAGIC, MAX_RECORD_BYTES, DenseLayout, record_ends

__all__ = [
    "MAGIC",
    "MAX_RECORD_BYTES",
    "DenseBatch",
    "DenseLayout",
    "SparseBatch",
    "concat_batches",
    "decode",
    "encode_dense",
    "encode_sparse",
    "iter_batches",
    "record_ends",
]
