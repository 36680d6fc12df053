from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Tensor(_message.Message):
    __slots__ = ("dtype", "shape", "data")
    DTYPE_FIELD_NUMBER: _ClassVar[int]
    SHAPE_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    dtype: str
    shape: _containers.RepeatedScalarFieldContainer[int]
    data: bytes
    def __init__(self, dtype: _Optional[str] = ..., shape: _Optional[_Iterable[int]] = ..., data: _Optional[bytes] = ...) -> None: ...

class JoinRequest(_message.Message):
    __slots__ = ("node_id", "protocol")
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    PROTOCOL_FIELD_NUMBER: _ClassVar[int]
    node_id: str
    protocol: str
    def __init__(self, node_id: _Optional[str] = ..., protocol: _Optional[str] = ...) -> None: ...

class JoinReply(_message.Message):
    __slots__ = ("member_id", "coordinator_run", "run_config_toml", "node_index", "heartbeat_seconds")
    MEMBER_ID_FIELD_NUMBER: _ClassVar[int]
    COORDINATOR_RUN_FIELD_NUMBER: _ClassVar[int]
    RUN_CONFIG_TOML_FIELD_NUMBER: _ClassVar[int]
    NODE_INDEX_FIELD_NUMBER: _ClassVar[int]
    HEARTBEAT_SECONDS_FIELD_NUMBER: _ClassVar[int]
    member_id: str
    coordinator_run: str
    run_config_toml: str
    node_index: int
    heartbeat_seconds: float
    def __init__(self, member_id: _Optional[str] = ..., coordinator_run: _Optional[str] = ..., run_config_toml: _Optional[str] = ..., node_index: _Optional[int] = ..., heartbeat_seconds: _Optional[float] = ...) -> None: ...

class ReadyRequest(_message.Message):
    __slots__ = ("member_id", "weight", "num_samples", "model", "device", "resumed_round", "input_shape", "num_classes")
    MEMBER_ID_FIELD_NUMBER: _ClassVar[int]
    WEIGHT_FIELD_NUMBER: _ClassVar[int]
    NUM_SAMPLES_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    DEVICE_FIELD_NUMBER: _ClassVar[int]
    RESUMED_ROUND_FIELD_NUMBER: _ClassVar[int]
    INPUT_SHAPE_FIELD_NUMBER: _ClassVar[int]
    NUM_CLASSES_FIELD_NUMBER: _ClassVar[int]
    member_id: str
    weight: float
    num_samples: int
    model: str
    device: str
    resumed_round: int
    input_shape: _containers.RepeatedScalarFieldContainer[int]
    num_classes: int
    def __init__(self, member_id: _Optional[str] = ..., weight: _Optional[float] = ..., num_samples: _Optional[int] = ..., model: _Optional[str] = ..., device: _Optional[str] = ..., resumed_round: _Optional[int] = ..., input_shape: _Optional[_Iterable[int]] = ..., num_classes: _Optional[int] = ...) -> None: ...

class ReadyReply(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class Beat(_message.Message):
    __slots__ = ("member_id", "sequence")
    MEMBER_ID_FIELD_NUMBER: _ClassVar[int]
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    member_id: str
    sequence: int
    def __init__(self, member_id: _Optional[str] = ..., sequence: _Optional[int] = ...) -> None: ...

class HeartbeatSummary(_message.Message):
    __slots__ = ("received",)
    RECEIVED_FIELD_NUMBER: _ClassVar[int]
    received: int
    def __init__(self, received: _Optional[int] = ...) -> None: ...

class TrainLocal(_message.Message):
    __slots__ = ("epochs",)
    EPOCHS_FIELD_NUMBER: _ClassVar[int]
    epochs: int
    def __init__(self, epochs: _Optional[int] = ...) -> None: ...

class DreamStep(_message.Message):
    __slots__ = ("batch", "step", "seed", "shape", "dreams", "targets")
    BATCH_FIELD_NUMBER: _ClassVar[int]
    STEP_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    SHAPE_FIELD_NUMBER: _ClassVar[int]
    DREAMS_FIELD_NUMBER: _ClassVar[int]
    TARGETS_FIELD_NUMBER: _ClassVar[int]
    batch: int
    step: int
    seed: int
    shape: _containers.RepeatedScalarFieldContainer[int]
    dreams: Tensor
    targets: Tensor
    def __init__(self, batch: _Optional[int] = ..., step: _Optional[int] = ..., seed: _Optional[int] = ..., shape: _Optional[_Iterable[int]] = ..., dreams: _Optional[_Union[Tensor, _Mapping]] = ..., targets: _Optional[_Union[Tensor, _Mapping]] = ...) -> None: ...

class SoftLabels(_message.Message):
    __slots__ = ("dreams",)
    DREAMS_FIELD_NUMBER: _ClassVar[int]
    dreams: Tensor
    def __init__(self, dreams: _Optional[_Union[Tensor, _Mapping]] = ...) -> None: ...

class AcquireKnowledge(_message.Message):
    __slots__ = ("dreams", "logits")
    DREAMS_FIELD_NUMBER: _ClassVar[int]
    LOGITS_FIELD_NUMBER: _ClassVar[int]
    dreams: Tensor
    logits: Tensor
    def __init__(self, dreams: _Optional[_Union[Tensor, _Mapping]] = ..., logits: _Optional[_Union[Tensor, _Mapping]] = ...) -> None: ...

class FedAvgTrain(_message.Message):
    __slots__ = ("epochs", "parameters")
    EPOCHS_FIELD_NUMBER: _ClassVar[int]
    PARAMETERS_FIELD_NUMBER: _ClassVar[int]
    epochs: int
    parameters: Tensor
    def __init__(self, epochs: _Optional[int] = ..., parameters: _Optional[_Union[Tensor, _Mapping]] = ...) -> None: ...

class LoadParameters(_message.Message):
    __slots__ = ("parameters",)
    PARAMETERS_FIELD_NUMBER: _ClassVar[int]
    parameters: Tensor
    def __init__(self, parameters: _Optional[_Union[Tensor, _Mapping]] = ...) -> None: ...

class Evaluate(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class Shutdown(_message.Message):
    __slots__ = ("reason",)
    REASON_FIELD_NUMBER: _ClassVar[int]
    reason: str
    def __init__(self, reason: _Optional[str] = ...) -> None: ...

class SecAggBegin(_message.Message):
    __slots__ = ("session_id", "client_index", "n_clients", "dim", "clip", "threshold", "graph", "degree", "scale", "max_weight", "steps_per_block", "weight_unit", "members", "identity_keys", "identity_certificates")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    CLIENT_INDEX_FIELD_NUMBER: _ClassVar[int]
    N_CLIENTS_FIELD_NUMBER: _ClassVar[int]
    DIM_FIELD_NUMBER: _ClassVar[int]
    CLIP_FIELD_NUMBER: _ClassVar[int]
    THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    GRAPH_FIELD_NUMBER: _ClassVar[int]
    DEGREE_FIELD_NUMBER: _ClassVar[int]
    SCALE_FIELD_NUMBER: _ClassVar[int]
    MAX_WEIGHT_FIELD_NUMBER: _ClassVar[int]
    STEPS_PER_BLOCK_FIELD_NUMBER: _ClassVar[int]
    WEIGHT_UNIT_FIELD_NUMBER: _ClassVar[int]
    MEMBERS_FIELD_NUMBER: _ClassVar[int]
    IDENTITY_KEYS_FIELD_NUMBER: _ClassVar[int]
    IDENTITY_CERTIFICATES_FIELD_NUMBER: _ClassVar[int]
    session_id: bytes
    client_index: int
    n_clients: int
    dim: int
    clip: float
    threshold: int
    graph: str
    degree: int
    scale: float
    max_weight: float
    steps_per_block: int
    weight_unit: float
    members: _containers.RepeatedScalarFieldContainer[str]
    identity_keys: _containers.RepeatedScalarFieldContainer[bytes]
    identity_certificates: _containers.RepeatedScalarFieldContainer[bytes]
    def __init__(self, session_id: _Optional[bytes] = ..., client_index: _Optional[int] = ..., n_clients: _Optional[int] = ..., dim: _Optional[int] = ..., clip: _Optional[float] = ..., threshold: _Optional[int] = ..., graph: _Optional[str] = ..., degree: _Optional[int] = ..., scale: _Optional[float] = ..., max_weight: _Optional[float] = ..., steps_per_block: _Optional[int] = ..., weight_unit: _Optional[float] = ..., members: _Optional[_Iterable[str]] = ..., identity_keys: _Optional[_Iterable[bytes]] = ..., identity_certificates: _Optional[_Iterable[bytes]] = ...) -> None: ...

class SecureStep(_message.Message):
    __slots__ = ("session_id", "step", "share_delivery")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    STEP_FIELD_NUMBER: _ClassVar[int]
    SHARE_DELIVERY_FIELD_NUMBER: _ClassVar[int]
    session_id: bytes
    step: int
    share_delivery: bytes
    def __init__(self, session_id: _Optional[bytes] = ..., step: _Optional[int] = ..., share_delivery: _Optional[bytes] = ...) -> None: ...

class Task(_message.Message):
    __slots__ = ("task_id", "round", "coordinator_run", "sequence", "secure", "train_local", "dream_step", "soft_labels", "acquire_knowledge", "fedavg_train", "load_parameters", "evaluate", "secagg_begin", "key_directory", "unmask_request", "consistency_request", "shutdown")
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    ROUND_FIELD_NUMBER: _ClassVar[int]
    COORDINATOR_RUN_FIELD_NUMBER: _ClassVar[int]
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    SECURE_FIELD_NUMBER: _ClassVar[int]
    TRAIN_LOCAL_FIELD_NUMBER: _ClassVar[int]
    DREAM_STEP_FIELD_NUMBER: _ClassVar[int]
    SOFT_LABELS_FIELD_NUMBER: _ClassVar[int]
    ACQUIRE_KNOWLEDGE_FIELD_NUMBER: _ClassVar[int]
    FEDAVG_TRAIN_FIELD_NUMBER: _ClassVar[int]
    LOAD_PARAMETERS_FIELD_NUMBER: _ClassVar[int]
    EVALUATE_FIELD_NUMBER: _ClassVar[int]
    SECAGG_BEGIN_FIELD_NUMBER: _ClassVar[int]
    KEY_DIRECTORY_FIELD_NUMBER: _ClassVar[int]
    UNMASK_REQUEST_FIELD_NUMBER: _ClassVar[int]
    CONSISTENCY_REQUEST_FIELD_NUMBER: _ClassVar[int]
    SHUTDOWN_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    round: int
    coordinator_run: str
    sequence: int
    secure: SecureStep
    train_local: TrainLocal
    dream_step: DreamStep
    soft_labels: SoftLabels
    acquire_knowledge: AcquireKnowledge
    fedavg_train: FedAvgTrain
    load_parameters: LoadParameters
    evaluate: Evaluate
    secagg_begin: SecAggBegin
    key_directory: bytes
    unmask_request: bytes
    consistency_request: bytes
    shutdown: Shutdown
    def __init__(self, task_id: _Optional[str] = ..., round: _Optional[int] = ..., coordinator_run: _Optional[str] = ..., sequence: _Optional[int] = ..., secure: _Optional[_Union[SecureStep, _Mapping]] = ..., train_local: _Optional[_Union[TrainLocal, _Mapping]] = ..., dream_step: _Optional[_Union[DreamStep, _Mapping]] = ..., soft_labels: _Optional[_Union[SoftLabels, _Mapping]] = ..., acquire_knowledge: _Optional[_Union[AcquireKnowledge, _Mapping]] = ..., fedavg_train: _Optional[_Union[FedAvgTrain, _Mapping]] = ..., load_parameters: _Optional[_Union[LoadParameters, _Mapping]] = ..., evaluate: _Optional[_Union[Evaluate, _Mapping]] = ..., secagg_begin: _Optional[_Union[SecAggBegin, _Mapping]] = ..., key_directory: _Optional[bytes] = ..., unmask_request: _Optional[bytes] = ..., consistency_request: _Optional[bytes] = ..., shutdown: _Optional[_Union[Shutdown, _Mapping]] = ...) -> None: ...

class PullTaskRequest(_message.Message):
    __slots__ = ("member_id", "wait_seconds")
    MEMBER_ID_FIELD_NUMBER: _ClassVar[int]
    WAIT_SECONDS_FIELD_NUMBER: _ClassVar[int]
    member_id: str
    wait_seconds: float
    def __init__(self, member_id: _Optional[str] = ..., wait_seconds: _Optional[float] = ...) -> None: ...

class TrainReport(_message.Message):
    __slots__ = ("num_samples", "loss")
    NUM_SAMPLES_FIELD_NUMBER: _ClassVar[int]
    LOSS_FIELD_NUMBER: _ClassVar[int]
    num_samples: int
    loss: float
    def __init__(self, num_samples: _Optional[int] = ..., loss: _Optional[float] = ...) -> None: ...

class EvalReport(_message.Message):
    __slots__ = ("accuracy", "loss", "num_samples")
    ACCURACY_FIELD_NUMBER: _ClassVar[int]
    LOSS_FIELD_NUMBER: _ClassVar[int]
    NUM_SAMPLES_FIELD_NUMBER: _ClassVar[int]
    accuracy: float
    loss: float
    num_samples: int
    def __init__(self, accuracy: _Optional[float] = ..., loss: _Optional[float] = ..., num_samples: _Optional[int] = ...) -> None: ...

class Ack(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class Skip(_message.Message):
    __slots__ = ("reason",)
    REASON_FIELD_NUMBER: _ClassVar[int]
    reason: str
    def __init__(self, reason: _Optional[str] = ...) -> None: ...

class Contribution(_message.Message):
    __slots__ = ("weighted_values", "weight")
    WEIGHTED_VALUES_FIELD_NUMBER: _ClassVar[int]
    WEIGHT_FIELD_NUMBER: _ClassVar[int]
    weighted_values: Tensor
    weight: float
    def __init__(self, weighted_values: _Optional[_Union[Tensor, _Mapping]] = ..., weight: _Optional[float] = ...) -> None: ...

class MaskedContribution(_message.Message):
    __slots__ = ("masked_input", "skip_reason")
    MASKED_INPUT_FIELD_NUMBER: _ClassVar[int]
    SKIP_REASON_FIELD_NUMBER: _ClassVar[int]
    masked_input: bytes
    skip_reason: str
    def __init__(self, masked_input: _Optional[bytes] = ..., skip_reason: _Optional[str] = ...) -> None: ...

class TaskResult(_message.Message):
    __slots__ = ("member_id", "task_id", "sequence", "train_report", "eval_report", "ack", "skip", "contribution", "masked", "secagg_message")
    MEMBER_ID_FIELD_NUMBER: _ClassVar[int]
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    TRAIN_REPORT_FIELD_NUMBER: _ClassVar[int]
    EVAL_REPORT_FIELD_NUMBER: _ClassVar[int]
    ACK_FIELD_NUMBER: _ClassVar[int]
    SKIP_FIELD_NUMBER: _ClassVar[int]
    CONTRIBUTION_FIELD_NUMBER: _ClassVar[int]
    MASKED_FIELD_NUMBER: _ClassVar[int]
    SECAGG_MESSAGE_FIELD_NUMBER: _ClassVar[int]
    member_id: str
    task_id: str
    sequence: int
    train_report: TrainReport
    eval_report: EvalReport
    ack: Ack
    skip: Skip
    contribution: Contribution
    masked: MaskedContribution
    secagg_message: bytes
    def __init__(self, member_id: _Optional[str] = ..., task_id: _Optional[str] = ..., sequence: _Optional[int] = ..., train_report: _Optional[_Union[TrainReport, _Mapping]] = ..., eval_report: _Optional[_Union[EvalReport, _Mapping]] = ..., ack: _Optional[_Union[Ack, _Mapping]] = ..., skip: _Optional[_Union[Skip, _Mapping]] = ..., contribution: _Optional[_Union[Contribution, _Mapping]] = ..., masked: _Optional[_Union[MaskedContribution, _Mapping]] = ..., secagg_message: _Optional[bytes] = ...) -> None: ...

class SubmitReply(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ExchangeRequest(_message.Message):
    __slots__ = ("result", "pull")
    RESULT_FIELD_NUMBER: _ClassVar[int]
    PULL_FIELD_NUMBER: _ClassVar[int]
    result: TaskResult
    pull: PullTaskRequest
    def __init__(self, result: _Optional[_Union[TaskResult, _Mapping]] = ..., pull: _Optional[_Union[PullTaskRequest, _Mapping]] = ...) -> None: ...
