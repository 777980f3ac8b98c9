"""Judging the operations a TensorFlow graph runs (``GraphOp`` facts from ``_formats/savedmodel.py``).

An ALLOWLIST: the ops ordinary models use (:data:`ORDINARY_OPS`) and calls of functions defined
in the graph's own library are CLEAN; ops that run Python, read, list or write host files, talk
to the network or send tensors to debug URLs/files (:data:`RISKY_OPS`) are MALICIOUS, named with
their node; any other op is ``savedmodel.unknown-op`` (SUSPICIOUS), which ``--allow tf.OpName``
turns into INFO (``_scan/engine.py::apply_allowances``). ``PrintV2`` is CLEAN to
stdout/stderr/log and MALICIOUS to a ``file://`` stream.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Final

from airlock._formats.base import GraphOp, Issue
from airlock.results import Severity

__all__ = ["ORDINARY_OPS", "RISKY_OPS", "judge_graph_op"]

_SHOW: Final = 200


def _show(text: str) -> str:
    return text if len(text) <= _SHOW else text[:_SHOW] + "..."


_PY: Final = ("savedmodel.python-op", Severity.MALICIOUS, "runs Python code")
_WRITE: Final = ("savedmodel.file-op", Severity.MALICIOUS, "writes files on the host")
_NET: Final = ("savedmodel.network-op", Severity.MALICIOUS, "opens network connections")
_READ: Final = ("savedmodel.file-op", Severity.MALICIOUS, "reads or lists files on the host")
_DEBUG: Final = ("savedmodel.debug-op", Severity.MALICIOUS, "sends tensors to debug URLs or files")
_CKPT: Final = (
    "savedmodel.file-op",
    Severity.MALICIOUS,
    "writes a legacy checkpoint to a path given at run time",
)

#: op name -> (rule, severity, what it does)
RISKY_OPS: Final[dict[str, tuple[str, Severity, str]]] = {
    **dict.fromkeys(["PyFunc", "PyFuncStateless", "EagerPyFunc"], _PY),
    **dict.fromkeys(
        ["WriteFile", "DistributedSave", "WriteSummary", "WriteScalarSummary", "WriteHistogramSummary",
         "WriteImageSummary", "WriteAudioSummary", "WriteGraphSummary", "WriteRawProtoSummary",
         "CreateSummaryFileWriter", "CreateSummaryDbWriter", "SummaryWriter", "FlushSummaryWriter",
         "ImportEvent", "SaveDataset", "SaveDatasetV2", "DatasetToTFRecord", "ExperimentalDatasetToTFRecord",
         "RecordInput", "SnapshotDataset", "SnapshotDatasetV2", "TPUEmbeddingActivations"],
        _WRITE,
    ),
    **dict.fromkeys(
        ["RpcCall", "RpcClient", "RpcServer", "RpcServerRegister", "RpcServerStart", "RpcCheckStatus",
         "RpcGetValue", "Rpc", "TryRpc", "RegisterDataset", "RegisterDatasetV2", "DataServiceDataset",
         "DataServiceDatasetV2", "DataServiceDatasetV3", "DataServiceDatasetV4", "CollectiveBcastSend",
         "CollectiveBcastRecv", "Send", "Recv", "_Send", "_Recv", "_HostSend", "_HostRecv"],
        _NET,
    ),
    **dict.fromkeys(
        ["ReadFile", "MatchingFiles", "MatchingFilesDataset", "ExperimentalMatchingFilesDataset", "ImmutableConst",
         "FixedLengthRecordDataset", "FixedLengthRecordDatasetV2", "CSVDataset", "CSVDatasetV2",
         "ExperimentalCSVDataset", "TFRecordDataset", "TFRecordDatasetV2", "TextLineDataset", "TextLineDatasetV2",
         "WholeFileReader", "WholeFileReaderV2", "TextLineReader", "TextLineReaderV2", "TFRecordReader",
         "TFRecordReaderV2", "FixedLengthRecordReader", "FixedLengthRecordReaderV2", "LoadDataset",
         "IdentityReader", "IdentityReaderV2", "LMDBReader", "LMDBDataset", "ExperimentalLMDBDataset",
         "SqlDataset", "ExperimentalSqlDataset", "ReaderRead", "ReaderReadV2", "ReaderReadUpTo",
         "ReaderReadUpToV2", "Restore", "RestoreSlice", "LoadAndRemapMatrix", "GenerateVocabRemapping",
         "DecodeProtoV2", "EncodeProto"],
        _READ,
    ),
    **dict.fromkeys(["DebugIdentity", "DebugIdentityV2", "DebugIdentityV3", "DebugNanCount", "DebugNumericSummary",
                     "DebugNumericSummaryV2", "Print"], _DEBUG),
    **dict.fromkeys(["Save", "SaveSlices"], _CKPT),
}  # fmt: skip

#: The ops ordinary Keras/TF models use (exported by tf.saved_model.save / Keras export).
ORDINARY_OPS: Final = frozenset(
    """Abs Acos Acosh Add AddN AddV2 AdjustContrastv2 AdjustHue AdjustSaturation All Angle Any
    ApproximateEqual ArgMax ArgMin AsString Asin Asinh Assert AssertNextDataset AssignAddVariableOp
    AssignSubVariableOp AssignVariableOp Atan Atan2 Atanh AvgPool AvgPool3D AvgPoolGrad BatchMatMul
    BatchMatMulV2 BatchMatMulV3 BatchNormWithGlobalNormalization BatchToSpace BatchToSpaceND BesselI0e
    BesselI1e Betainc BiasAdd BiasAddGrad BiasAddV1 Bincount Bitcast BitwiseAnd BitwiseOr BitwiseXor
    BroadcastArgs BroadcastGradientArgs BroadcastTo Bucketize Case Cast Ceil CheckNumerics
    CheckNumericsV2 Cholesky ClipByValue CombinedNonMaxSuppression Complex ComplexAbs Concat ConcatOffset
    ConcatV2 Conj ConjugateTranspose Const ControlTrigger Conv Conv2D Conv2DBackpropFilter
    Conv2DBackpropInput Conv3D Conv3DBackpropFilterV2 Conv3DBackpropInputV2 Cos Cosh CountUpTo
    CropAndResize Cross Cumprod Cumsum CumulativeLogsumexp DecodeBase64 DecodeBmp DecodeGif DecodeImage
    DecodeJpeg DecodePng DecodeRaw DenseBincount DepthToSpace DepthwiseConv2dNative
    DepthwiseConv2dNativeBackpropFilter DepthwiseConv2dNativeBackpropInput Dequantize DestroyResourceOp
    Diag DiagPart Digamma Dilation2D Div DivNoNan DynamicPartition DynamicStitch Einsum Elu EluGrad
    EmptyTensorList EncodeBase64 EncodeJpeg EncodePng EnsureShape Enter Equal Erf Erfc Erfinv
    EuclideanNorm Exit Exp ExpandDims Expm1 ExtractImagePatches ExtractVolumePatches FFT FFT2D FFT3D
    FakeQuantWithMinMaxArgs FakeQuantWithMinMaxVars FakeQuantWithMinMaxVarsPerChannel Fill Fingerprint
    Floor FloorDiv FloorMod FusedBatchNorm FusedBatchNormGradV3 FusedBatchNormV2 FusedBatchNormV3
    FusedPadConv2D FusedResizeAndPadConv2D Gather GatherNd GatherV2 Greater GreaterEqual GuaranteeConst
    HashTable HashTableV2 HistogramFixedWidth IFFT IFFT2D IFFT3D IRFFT IRFFT2D Identity IdentityN If Igamma
    Igammac Imag InTopK InTopKV2 InitializeTable InitializeTableFromTextFile
    InitializeTableFromTextFileV2 InitializeTableV2 Inv InvGrad Invert InvertPermutation IsFinite IsInf
    IsNan IsVariableInitialized L2Loss LRN LeakyRelu LeakyReluGrad LeftShift Less LessEqual Lgamma
    LinSpace ListDiff Log Log1p LogMatrixDeterminant LogSoftmax LogicalAnd LogicalNot LogicalOr
    LookupTableExport LookupTableExportV2 LookupTableFind LookupTableFindV2 LookupTableImport
    LookupTableImportV2 LookupTableInsert LookupTableInsertV2 LookupTableRemoveV2 LookupTableSize
    LookupTableSizeV2 LoopCond LowerBound Lu MatMul MatrixBandPart MatrixDeterminant MatrixDiag
    MatrixDiagPart MatrixDiagPartV2 MatrixDiagPartV3 MatrixDiagV2 MatrixDiagV3 MatrixExponential
    MatrixInverse MatrixLogarithm MatrixSetDiag MatrixSetDiagV2 MatrixSetDiagV3 MatrixSolve
    MatrixSolveLs MatrixSquareRoot MatrixTriangularSolve Max MaxPool MaxPool3D MaxPoolGrad MaxPoolV2
    MaxPoolWithArgmax Maximum Mean Merge MergeV2Checkpoints Min Minimum MirrorPad MirrorPadGrad Mod Mul
    MulNoNan Multinomial MutableDenseHashTable MutableDenseHashTableV2 MutableHashTable
    MutableHashTableOfTensors MutableHashTableOfTensorsV2 MutableHashTableV2 Ndtri Neg NextAfter
    NextIteration NoOp NonMaxSuppression NonMaxSuppressionV2 NonMaxSuppressionV3 NonMaxSuppressionV4
    NonMaxSuppressionV5 NotEqual NthElement OneHot OnesLike OptionalFromValue OptionalGetValue
    OptionalHasValue OptionalNone Pack Pad PadV2 ParallelConcat ParallelDynamicStitch
    ParameterizedTruncatedNormal PartitionedCall Placeholder PlaceholderWithDefault Polygamma
    PopulationCount Pow PreventGradient PrintV2 Prod Qr QuantizeAndDequantize QuantizeAndDequantizeV2
    QuantizeAndDequantizeV3 QuantizeAndDequantizeV4 QuantizeV2 RFFT RFFT2D RGBToHSV RaggedGather
    RaggedRange RaggedTensorFromVariant RaggedTensorToSparse RaggedTensorToTensor RaggedTensorToVariant
    RandomGamma RandomPoisson RandomPoissonV2 RandomShuffle RandomStandardNormal RandomUniform
    RandomUniformInt Range Rank ReadVariableOp Real RealDiv Reciprocal ReciprocalGrad Reduce ReduceJoin
    RefIdentity RegexFullMatch RegexReplace Relu Relu6 Relu6Grad ReluGrad Reshape ResizeArea
    ResizeBicubic ResizeBilinear ResizeBilinearGrad ResizeNearestNeighbor ResizeNearestNeighborGrad
    ResourceGather ResourceGatherNd ResourceScatterAdd ResourceScatterNdUpdate ResourceScatterUpdate
    ResourceStridedSliceAssign RestoreV2 Reverse ReverseSequence ReverseV2 RightShift Rint
    RngReadAndSkip RngSkip Roll Round Rsqrt RsqrtGrad SaveV2 ScaleAndTranslate ScatterNd
    ScatterNdNonAliasingAdd SegmentMax SegmentMean SegmentMin SegmentProd SegmentSum Select SelectV2
    SelfAdjointEigV2 Selu SeluGrad Shape ShapeN ShardedFilename ShardedFilenames Sigmoid SigmoidGrad Sign
    Sin Sinh Size Slice Snapshot Softmax SoftmaxCrossEntropyWithLogits Softplus SoftplusGrad Softsign
    SoftsignGrad SpaceToBatch SpaceToBatchND SpaceToDepth SparseFillEmptyRows SparseReshape
    SparseSegmentMean SparseSegmentSqrtN SparseSegmentSum SparseSlice SparseSoftmaxCrossEntropyWithLogits
    SparseTensorDenseMatMul SparseToDense Split SplitV Sqrt SqrtGrad Square SquaredDifference Squeeze
    StackCloseV2 StackPopV2 StackPushV2 StackV2 StatefulPartitionedCall StatefulStandardNormalV2
    StatefulTruncatedNormal StatefulUniform StatefulUniformFullInt StatefulUniformInt StatelessCase
    StatelessIf StatelessMultinomial StatelessRandomGetAlg StatelessRandomGetKeyCounter
    StatelessRandomGetKeyCounterAlg StatelessRandomNormal StatelessRandomNormalV2
    StatelessRandomUniform StatelessRandomUniformFullInt StatelessRandomUniformFullIntV2
    StatelessRandomUniformInt StatelessRandomUniformIntV2 StatelessRandomUniformV2
    StatelessTruncatedNormal StatelessTruncatedNormalV2 StatelessWhile StaticRegexFullMatch
    StaticRegexReplace StopGradient StridedSlice StridedSliceGrad StringFormat StringJoin StringLength
    StringLower StringSplit StringSplitV2 StringStrip StringToHashBucket StringToHashBucketFast
    StringToHashBucketStrong StringToNumber StringUpper Sub Substr Sum Svd Switch Tan Tanh TanhGrad
    TensorArrayCloseV3 TensorArrayConcatV3 TensorArrayGatherV3 TensorArrayGradV3 TensorArrayReadV3
    TensorArrayScatterV3 TensorArraySizeV3 TensorArraySplitV3 TensorArrayV3 TensorArrayWriteV3
    TensorListConcatV2 TensorListElementShape TensorListFromTensor TensorListGather TensorListGetItem
    TensorListLength TensorListPopBack TensorListPushBack TensorListReserve TensorListResize
    TensorListScatterIntoExistingList TensorListSetItem TensorListSplit TensorListStack
    TensorScatterAdd TensorScatterMax TensorScatterMin TensorScatterSub TensorScatterUpdate Tile TileGrad
    TopK TopKV2 Transpose TridiagonalMatMul TridiagonalSolve TruncateDiv TruncateMod TruncatedNormal
    UnicodeDecode UnicodeDecodeWithOffsets UnicodeEncode UnicodeScript UnicodeTranscode Unique
    UniqueV2 UniqueWithCounts UniqueWithCountsV2 Unpack UnravelIndex UnsortedSegmentMax
    UnsortedSegmentMin UnsortedSegmentProd UnsortedSegmentSum UpperBound VarHandleOp VarIsInitializedOp
    Variable VariableShape VariableV2 Where While Xdivy XlaCallModule Xlog1py Xlogy ZerosLike Zeta
    DisableCopyOnRead BatchFunction CudnnRNN CudnnRNNV2 CudnnRNNV3 CudnnRNNBackprop CudnnRNNBackpropV2
    CudnnRNNBackpropV3 CudnnRNNCanonicalToParams CudnnRNNParamsToCanonical BlockLSTM BlockLSTMV2
    LSTMBlockCell GRUBlockCell ResourceApplyAdam ResourceApplyAdamWithAmsgrad ResourceApplyAdagrad
    ResourceApplyAdagradV2 ResourceApplyAdadelta ResourceApplyAdaMax ResourceApplyRMSProp
    ResourceApplyCenteredRMSProp ResourceApplyFtrl ResourceApplyFtrlV2 ResourceApplyGradientDescent
    ResourceApplyMomentum ResourceApplyKerasMomentum ResourceApplyProximalAdagrad
    ResourceApplyProximalGradientDescent ResourceSparseApplyAdagrad ResourceSparseApplyAdagradV2
    ResourceSparseApplyFtrl ResourceSparseApplyFtrlV2 ResourceSparseApplyMomentum
    ResourceSparseApplyKerasMomentum ResourceSparseApplyRMSProp ResourceSparseApplyAdadelta
    ResourceScatterSub ResourceScatterMul ResourceScatterDiv ResourceScatterMin ResourceScatterMax
    ResourceScatterNdAdd ResourceScatterNdSub ResourceApplyAddSign ResourceApplyPowerSign
    SymbolicGradient Gelu""".split()
)


def judge_graph_op(fact: GraphOp) -> Iterator[Issue]:
    """The finding for one op of a TensorFlow graph, if any."""
    op, name, where = fact.op, fact.node, fact.where
    risk = RISKY_OPS.get(op)
    stream = fact.output_stream
    if op == "PrintV2" and stream is not None and stream.startswith("file://"):
        risk = ("savedmodel.file-op", Severity.MALICIOUS, f"appends tensor text to {_show(stream)!r}")
    if risk is None:
        if op in ORDINARY_OPS or fact.calls_function:
            return
        yield Issue(
            "savedmodel.unknown-op",
            Severity.SUSPICIOUS,
            f"node {_show(name)!r} in {where} is a {_show(op)!r} op, which is not among the TensorFlow ops "
            "ordinary models use (a custom op needs a native library; review it, or --allow tf.OpName)",
            offset=fact.offset,
            callable=_show(op),
            evidence=_show(name),
        )
        return
    rule, severity, what = risk
    yield Issue(
        rule,
        severity,
        f"node {_show(name)!r} in {where} is a {_show(op)!r} op, which {what} when the graph runs "
        f"(expected only computation ops)",
        offset=fact.offset,
        callable=_show(op),
        evidence=_show(name),
    )
