"""An .onnx file into the working representation: parsed and checked (domains, tensor sizes, external data), run
once by ONNX Runtime in a sandboxed child, constant-folded, its prunable weights found. A model over
`IN_MEMORY_LIMIT` keeps its weights on disk, memory-mapped."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import onnx
from google.protobuf.message import DecodeError
from onnx import numpy_helper

from core.errors import InvalidSettingError, ModelLoadError, UnsupportedModelError
from core.load.files import cache_dir
from core.load.offload import FORMAT as OFFLOAD_FORMAT
from core.load.offload import SLIM_MODEL_NAME, move_weights_to_disk
from core.model import EvalSet, LazyWeights, Model
from core.onnx.external_data import all_tensors, check_external_data, has_external_data, tensors_beside_initializers
from core.onnx.folding import fold_constants
from core.onnx.graph import PRUNABLE_OPS, all_nodes, find_prunable_layers, opset_version
from core.onnx.inputs import RANDOM_EVAL_BATCH, RANDOM_EVAL_SEED, RANDOM_TUNING_SEED, GivenInput, InputPlan, input_plans
from core.onnx.opsets import MAX_OUTPUT_CHANGE, MIN_QDQ_OPSET, Upgrade, upgraded
from core.onnx.runtime import create_session, with_data_in
from core.onnx.sandbox import PROBE_TIMEOUT_SETTING, probe_timeout_s, run_isolated

# A model over this stays on disk, memory-mapped, instead of being read into memory (and into every protobuf and
# ONNX Runtime copy). Everything but block pruning and int8 activations runs on such a model (see
# `require_in_memory`). SQUEEZELAB_IN_MEMORY_LIMIT (bytes) lowers it where memory matters more than those features.
IN_MEMORY_LIMIT = 1024**3
DIGEST_CHUNK = 16 * 1024**2
NOT_PRUNED_IN_MEMORY_LIMIT = 1024**3  # a large model's other tensors are read into memory, up to this much


def load_onnx_file(
    path: Path, *, name: str | None = None, source: str | None = None, given: dict[str, GivenInput] | None = None
) -> Model:
    """An .onnx file, with any external data beside it. A model over `IN_MEMORY_LIMIT` keeps its prunable weights
    on disk, memory-mapped, so its size in memory stays near its size on disk: external data stays where it is,
    weights inside a single large file are first moved into an external data file in the cache."""
    source = source or str(path)
    if not path.is_file():
        raise ModelLoadError("not a file", source)
    limit = in_memory_limit()
    data = path.read_bytes()
    large_file = len(data) > limit
    # A large file is checked once its weights are out: handed the whole model, the checker would copy it again.
    proto = parse_onnx(data, source, path=path, defer_check=large_file)
    folder = sha256 = None
    if has_external_data(proto):
        if len(data) + external_data_bytes(proto) > limit:  # read in, it could outgrow one protobuf
            folder = path.parent
        else:
            onnx.load_external_data_for_model(proto, str(path.parent))  # only now, with every location checked
            data = proto.SerializeToString()
    elif large_file:
        sha256 = hashlib.sha256(data).hexdigest()
        del data  # the parsed model holds the weights now
        folder = cache_dir() / "weights" / f"v{OFFLOAD_FORMAT}-{sha256}"
        proto = move_weights_to_disk(proto, folder, source)
        _check_model(str(folder / SLIM_MODEL_NAME), source)
        data = proto.SerializeToString()
    plans = input_plans(proto, source, given)
    # an old opset is converted once, in memory, if ONNX Runtime computes the same outputs from both
    upgrade = upgraded(proto) if folder is None else Upgrade(None, opset_version(proto))
    converted = None if upgrade.model is None else upgrade.model.SerializeToString()
    chosen, change = run_isolated(
        probe_model,
        data,
        plans,
        folder,
        converted,
        source=source,
        what="ONNX Runtime on this model",
        timeout_s=probe_timeout_s(),
        timeout_hint=f" (set {PROBE_TIMEOUT_SETTING} to allow longer)",
    )
    opset_note = _opset_note(upgrade, change)
    if converted is not None and change is not None and change <= MAX_OUTPUT_CHANGE:
        sha256 = sha256 or hashlib.sha256(data).hexdigest()  # of the user's own file: a recipe names it
        data, proto = converted, upgrade.model
    return model_from_bytes(
        data,
        name=name or path.name,
        source=source,
        parsed=proto,
        external_data_folder=folder,
        sha256=sha256,
        opset_note=opset_note,
        input_plan=plans[chosen],
        given_inputs=tuple((given or {}).values()),
    )


def _opset_note(upgrade: Upgrade, change: float | None) -> str:
    """What happened to an old opset, for the report; empty when the model needed nothing."""
    target = f"opset {MIN_QDQ_OPSET}"
    if upgrade.failure:
        return f"opset {upgrade.from_opset} could not be converted to {target} ({upgrade.failure})"
    if upgrade.model is None or change is None:
        return ""
    if change > MAX_OUTPUT_CHANGE:
        return (
            f"opset {upgrade.from_opset} was not converted to {target}: ONNX Runtime's outputs changed by "
            f"{change:.2g} (more than {MAX_OUTPUT_CHANGE:g})"
        )
    return f"converted from opset {upgrade.from_opset} to {target} at load (outputs equal within {MAX_OUTPUT_CHANGE:g})"


def model_from_bytes(
    data: bytes,
    *,
    name: str,
    source: str,
    description: str = "",
    task: str = "unknown",
    trained: bool | None = None,
    eval_set: EvalSet | None = None,
    parsed: onnx.ModelProto | None = None,
    external_data_folder: Path | None = None,
    sha256: str | None = None,
    tuning_set: EvalSet | None = None,
    opset_note: str = "",
    input_plan: InputPlan | None = None,
    given_inputs: tuple[GivenInput, ...] = (),
) -> Model:
    """Validate ONNX bytes and build the working representation; eval inputs are seeded random when none are given.
    `parsed`: these bytes already parsed and checked by `parse_onnx`, so they are not parsed again.
    `external_data_folder`: the (checked) folder of a large model's external data, which stays there.
    `sha256`: the model file's digest when the caller already took it. `input_plan`: how to make up inputs
    that ran (see `probe_model`), for a model without evaluation data; `given_inputs`: what the user said about
    them."""
    folder = external_data_folder
    proto = parsed if parsed is not None else parse_onnx(data, source)
    if folder is not None:
        sha256 = sha256 or _on_disk_digest(data, proto, folder)
        _load_all_but_weights(proto, folder, source)  # before folding, which reads constants
    proto, folded_nodes = fold_constants(proto)
    layers = find_prunable_layers(proto)
    if not layers:
        nested = sum(node.op_type in PRUNABLE_OPS for node in all_nodes(proto)) - sum(
            node.op_type in PRUNABLE_OPS for node in proto.graph.node
        )
        where = (
            f": its {nested} Conv/Gemm/MatMul nodes sit inside If/Loop/Scan subgraphs, which are not compressed yet"
            if nested
            else " (a Conv, ConvTranspose, Gemm or MatMul with a constant float weight)"
        )
        raise UnsupportedModelError(f"no prunable weights in the main graph{where}", source)
    initializers = {init.name: init for init in proto.graph.initializer}
    if folder is not None:
        data = proto.SerializeToString()
    else:
        sha256 = sha256 or hashlib.sha256(data).hexdigest()  # of the user's own bytes: a recipe names their file
        if folded_nodes:
            data = proto.SerializeToString()  # the folded graph is the "original" every comparison runs against
    weights: Mapping[str, np.ndarray] = {}
    on_disk = {}
    for layer in layers:
        tensor = initializers[layer.name]
        if tensor.data_location == onnx.TensorProto.EXTERNAL:
            memory_mapped(tensor, folder, source)  # checked once here; mapped afresh on every read below
            on_disk[layer.name] = tensor
            continue
        array = numpy_helper.to_array(tensor)
        array.flags.writeable = False  # shared by every session: nobody may change it in place
        weights[layer.name] = array
    if on_disk:
        # A fresh read-only map per read: once the reader drops it, its pages leave this process (they stay in
        # the page cache), so a pass over every layer holds one layer, not the whole model.
        in_memory = weights
        weights = LazyWeights(
            [layer.name for layer in layers],
            lambda name: in_memory[name] if name in in_memory else memory_mapped(on_disk[name], folder, source),
        )
    random_inputs = eval_set is None
    if eval_set is None:
        input_plan = input_plan or input_plans(proto, source)[0]
        eval_set = EvalSet(input_plan.feeds(RANDOM_EVAL_BATCH, RANDOM_EVAL_SEED), None)
        tuning_set = tuning_set or EvalSet(input_plan.feeds(RANDOM_EVAL_BATCH, RANDOM_TUNING_SEED), None)
    model = Model(
        name=name,
        source=source,
        description=description,
        task=task,
        trained=trained,
        onnx_bytes=data,
        sha256=sha256,
        proto=proto,
        layers=tuple(layers),
        weights=weights,
        eval_set=eval_set,
        eval_inputs_are_random=random_inputs,
        folded_nodes=folded_nodes,
        external_data_folder=folder,
        tuning_set=tuning_set,
        opset_note=opset_note,
        input_plan=input_plan if random_inputs else None,
        given_inputs=given_inputs,
    )
    try:
        model.reference_outputs  # noqa: B018 - runs the model once: ONNX Runtime is the final judge of validity
    except Exception as error:  # ONNX Runtime raises its own exception types for broken graphs
        raise ModelLoadError(f"ONNX Runtime cannot run it: {_first_line(error)}", source, str(error)) from None
    return model


def in_memory_limit() -> int:
    """Bytes of weights above which a model stays on disk: IN_MEMORY_LIMIT, or SQUEEZELAB_IN_MEMORY_LIMIT."""
    text = os.environ.get("SQUEEZELAB_IN_MEMORY_LIMIT")
    if text is None:
        return IN_MEMORY_LIMIT
    try:
        return max(0, int(text))
    except ValueError:
        raise InvalidSettingError("must be a whole number of bytes", "SQUEEZELAB_IN_MEMORY_LIMIT") from None


def _load_all_but_weights(proto: onnx.ModelProto, folder: Path, source: str) -> None:
    """Only the prunable weights of a large model stay on disk. Every other external tensor (biases, norms, those
    in subgraphs and attributes) is read into the graph, so no location of the user's is resolved anywhere else."""
    prunable = {layer.name for layer in find_prunable_layers(proto)}
    candidates = [init for init in proto.graph.initializer if init.name not in prunable]
    candidates += tensors_beside_initializers(proto)
    rest = [tensor for tensor in candidates if tensor.data_location == onnx.TensorProto.EXTERNAL]
    rest_bytes = sum(int(np.prod(tensor.dims)) * _itemsize(tensor) for tensor in rest)
    if rest_bytes > NOT_PRUNED_IN_MEMORY_LIMIT:
        raise UnsupportedModelError(
            f"{rest_bytes / 1e9:.1f} GB of its external data are tensors this tool does not prune (embeddings?): "
            "too large to hold in memory",
            source,
        )
    for tensor in rest:
        onnx.external_data_helper.load_external_data_for_tensor(tensor, str(folder))
        tensor.data_location = onnx.TensorProto.DEFAULT
        del tensor.external_data[:]


def external_data_bytes(proto: onnx.ModelProto) -> int:
    """How many bytes the model keeps in external data files, by the tensors' declared shapes."""
    return sum(
        int(np.prod(tensor.dims)) * _itemsize(tensor)
        for tensor in all_tensors(proto)
        if tensor.data_location == onnx.TensorProto.EXTERNAL
    )


def _itemsize(tensor: onnx.TensorProto) -> int:
    if tensor.data_type in STRING_OR_PACKED or not tensor.data_type:
        return 1
    return onnx.helper.tensor_dtype_to_np_dtype(tensor.data_type).itemsize


def memory_mapped(tensor: onnx.TensorProto, folder: Path, source: str) -> np.ndarray:
    """A float32 external tensor as a read-only memory map of its (already checked) file: nothing is copied."""
    info = {entry.key: entry.value for entry in tensor.external_data}
    shape = tuple(tensor.dims)
    expected = int(np.prod(shape)) * 4
    length = int(info.get("length", 0) or 0)
    if length and length != expected:
        raise ModelLoadError(
            f"tensor {tensor.name!r} declares {expected:,} bytes but its external data has {length:,}", source
        )
    try:
        return np.memmap(folder / info["location"], np.float32, "r", int(info.get("offset", 0) or 0), shape)
    except ValueError:  # the file ends before the tensor does
        raise ModelLoadError(f"external data of tensor {tensor.name!r} ends early", source) from None


def _on_disk_digest(data: bytes, proto: onnx.ModelProto, folder: Path) -> str:
    """SHA-256 over the .onnx bytes and its external data files, read in chunks (never whole into memory)."""
    digest = hashlib.sha256(data)
    locations = sorted(
        {entry.value for tensor in all_tensors(proto) for entry in tensor.external_data if entry.key == "location"}
    )
    for location in locations:
        file_digest(folder / location, digest)
    return digest.hexdigest()


def file_digest(path: Path, digest=None) -> str:
    digest = digest or hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(DIGEST_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def parse_onnx(data: bytes, source: str, path: Path | None = None, defer_check: bool = False) -> onnx.ModelProto:
    """Parse and check ONNX bytes (the file at `path`); external data locations are checked against its folder
    (and refused without one) but not loaded. `defer_check`: the caller runs the ONNX checker itself (unless
    there is external data, which it checks here by path)."""
    if not data:
        raise ModelLoadError("empty file", source)
    try:
        proto = onnx.ModelProto.FromString(data)
    except DecodeError:
        raise ModelLoadError("not an ONNX model (the protobuf does not parse; corrupt or truncated?)", source) from None
    if proto.ir_version <= 0 or not proto.HasField("graph") or not proto.graph.node:
        raise ModelLoadError("not an ONNX model (no graph inside)", source)
    check_domains(proto, source)
    check_tensor_sizes(proto, source)
    if has_external_data(proto):
        if path is None:
            raise UnsupportedModelError("the model keeps weights in external data files: upload it as a .zip", source)
        check_external_data(proto, path.parent, source)
        _check_model(str(path), source)  # by path: the checker looks for the data beside the file, not in our cwd
    elif not defer_check:
        _check_model(proto, source)
    return proto


def _check_model(model: onnx.ModelProto | str, source: str) -> None:
    try:
        onnx.checker.check_model(model)
    except onnx.checker.ValidationError as error:
        raise ModelLoadError(f"invalid ONNX model: {_first_line(error)}", source, str(error)) from None


# Operator domains whose kernels ship inside ONNX Runtime; anything else needs a custom op library, which this
# tool never registers.
KNOWN_DOMAINS = {"", "ai.onnx", "ai.onnx.ml", "com.microsoft", "ai.onnx.preview.training"}
MAX_TENSOR_ELEMENTS = 2**34


def check_domains(proto: onnx.ModelProto, source: str) -> None:
    """Refuse operators whose kernels ONNX Runtime does not ship, wherever a node uses them. A domain that is only
    declared (every paddle2onnx export declares one) needs no kernel: it is accepted and kept as it is."""
    custom = sorted({node.domain for node in all_nodes(proto)} - KNOWN_DOMAINS)
    if custom:
        raise UnsupportedModelError(
            f"uses custom operators (domain {', '.join(custom)}): custom op libraries are never loaded", source
        )


def check_tensor_sizes(proto: onnx.ModelProto, source: str) -> None:
    """Refuse tensors whose declared shape does not match the bytes they hold, before anything allocates them."""
    for tensor in all_tensors(proto):
        elements = 1
        for dim in tensor.dims:
            if dim < 0:
                raise ModelLoadError(f"tensor {tensor.name!r} declares a negative dimension", source)
            elements *= dim
        if elements > MAX_TENSOR_ELEMENTS:
            raise ModelLoadError(f"tensor {tensor.name!r} declares {elements:,} elements", source)
        if tensor.data_location == onnx.TensorProto.EXTERNAL or not tensor.HasField("raw_data"):
            continue
        itemsize = onnx.helper.tensor_dtype_to_np_dtype(tensor.data_type).itemsize if tensor.data_type else 0
        if itemsize and tensor.data_type not in STRING_OR_PACKED and len(tensor.raw_data) != elements * itemsize:
            raise ModelLoadError(
                f"tensor {tensor.name!r} declares {elements:,} elements but holds {len(tensor.raw_data):,} bytes",
                source,
            )


STRING_OR_PACKED = {onnx.TensorProto.STRING, onnx.TensorProto.INT4, onnx.TensorProto.UINT4}


def probe_model(
    data: bytes,
    plans: list[InputPlan],
    external_data_folder: Path | None,
    converted: bytes | None = None,
    progress=None,
) -> tuple[int, float | None]:
    """Runs in a sandbox child: create a session and run it on made-up inputs, plan after plan, until one runs;
    which one, and, with `converted` (the same model at another opset) run on it too, the largest change of any
    output (infinity where their shapes differ)."""
    session = create_session(with_data_in(data, external_data_folder))
    index, feeds, outputs = _first_that_runs(session, plans)
    if converted is None:
        return index, None
    others = create_session(converted).run(None, feeds)
    if [output.shape for output in outputs] != [other.shape for other in others]:
        return index, float("inf")
    return index, max(
        (float(np.max(np.abs(a - b), initial=0.0)) for a, b in zip(outputs, others, strict=True)), default=0.0
    )


def _first_that_runs(session, plans: list[InputPlan]) -> tuple[int, dict[str, np.ndarray], list[np.ndarray]]:
    """The first plan whose inputs the session runs: its position, its inputs and the outputs."""
    failures = []
    for index, plan in enumerate(plans):
        feeds = plan.feeds(RANDOM_EVAL_BATCH, RANDOM_EVAL_SEED)
        try:
            return index, feeds, session.run(None, feeds)
        except Exception as error:  # noqa: BLE001 - ONNX Runtime's own types; the next plan may run
            failures.append(str(error).strip())
    made_up = plans[0].describe() or "their declared shapes"
    tried = f"; also tried {len(plans) - 1} other sizes" if len(plans) > 1 else ""
    name = (plans[0].made_up or tuple(plans[0].shapes))[0]
    said = "\n".join(
        f"with {plan.describe() or 'the declared shapes'}: {failure}"
        for plan, failure in zip(plans, failures, strict=True)
    )
    # the first line is for the user; ONNX Runtime's messages follow, for --verbose and the page's details
    raise ValueError(
        f"did not run on made-up inputs ({made_up}{tried}): set them with --shape {name}=... or --value "
        f"{name}=... (the page's Inputs panel)\nONNX Runtime said:\n{said}"
    )


def _first_line(error: BaseException) -> str:
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return lines[0] if lines else type(error).__name__
