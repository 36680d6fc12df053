"""The run configuration's schema: frozen dataclasses validated on construction.

Errors name the field and what is allowed. Only the CLI reads files, environment and flags
(TOML → CODREAM_* → flags); everything else receives a finished `RunConfig`. Building from
mappings and writing TOML is generic and lives in `codream.nested_config`.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field, replace

from codream.dream_objective import BatchNormStatistics, DreamLossWeights
from codream.local_dreaming import UPDATE_NORMS, LocalDreamConfig
from codream.nested_config import ConfigError, build, dotted, merge, require, to_dict, to_toml
from codream.partition import is_valid_scheme as partition_scheme_is_valid
from codream.server_optimizer import ServerOptimizerConfig
from codream.soft_labels import MODES as SOFT_LABEL_MODES
from codream.strategies import STRATEGIES
from codream.training import DREAM_BN_MODES, LOCAL_LOSSES, OPTIMIZERS, OptimizerConfig


@dataclass(frozen=True)
class DreamConfig:
    """Collaborative synthesis: S global steps of M local steps each on B dreams."""

    batch_size: int = 256
    global_steps: int = 50
    batches_per_round: int = 1
    local_steps: int = 1
    local_lr: float = 1.0
    local_optimizer: str = "sgd"
    entropy: float = 1.0
    bn: float = 10.0
    tv: float = 2.5e-5
    l2: float = 3e-8
    adaptive: float = 0.0
    adaptive_from_round: int = 2
    diversity: float = 5.0
    # Balancing heterogeneous clients' pull on the dreams (measured in benchmarks/learning.py):
    bn_reduction: str = "mean"  # mean over a model's BN layers, or sum (DeepInversion)
    update_norm: str = "rms"  # rms: each client's change per dream at unit RMS; or none
    class_conditional: bool = False  # dream i has class i mod classes, shaped by its holders
    consensus: bool = False  # from step 1 each client's confidence term is CE to the previous
                             # step's summed soft label of the dream (consensus_dreams)
    warm_start: bool = False  # batch b of a round continues batch b of the round before (its
                              # final dreams, not fresh noise): every dream gets S steps a round

    def __post_init__(self) -> None:
        require(self.bn_reduction in BatchNormStatistics.BN_REDUCTIONS, "dream.bn_reduction",
                f"must be one of {', '.join(BatchNormStatistics.BN_REDUCTIONS)}, "
                f"got {self.bn_reduction!r}")
        require(self.update_norm in UPDATE_NORMS, "dream.update_norm",
                f"must be one of {', '.join(UPDATE_NORMS)}, got {self.update_norm!r}")
        for name in ("batch_size", "global_steps", "batches_per_round", "local_steps"):
            require(getattr(self, name) >= 1, f"dream.{name}", "must be >= 1")
        require(self.local_lr > 0, "dream.local_lr", "must be > 0")
        require(
            self.local_optimizer in ("sgd", "adam"),
            "dream.local_optimizer",
            f"must be 'sgd' or 'adam', got {self.local_optimizer!r}",
        )
        for name in ("entropy", "bn", "tv", "l2", "adaptive", "diversity"):
            require(getattr(self, name) >= 0, f"dream.{name}", "must be >= 0")
        require(not (self.consensus and self.class_conditional), "dream.consensus",
                "and dream.class_conditional both choose each dream's target class; set one")

    def local(self) -> LocalDreamConfig:
        weights = DreamLossWeights(
            self.entropy, self.bn, self.tv, self.l2, self.adaptive, self.diversity
        )
        return LocalDreamConfig(self.local_steps, self.local_lr, self.local_optimizer, weights,
                                self.bn_reduction, self.update_norm)


@dataclass(frozen=True)
class DistillConfig:
    """Knowledge acquisition on the clients: CE(local) + λ·T²·KL over a buffer of dream batches."""

    temperature: float = 2.0
    kd_weight: float = 3.0
    buffer_batches: int = 8
    epochs: int = 10  # deep models need many steps to learn from dreams (2 left VGG/ResNet at ~45%)
    dream_batch_size: int = 128
    lr: float = 0.05
    optimizer: str = "sgd"  # sgd (momentum, weight decay of `train`) or adam
    soft_labels: str = "class_counts"
    dream_bn: str = "batch"  # BN on dreams during distillation: their batch stats, or running
    local_loss: str = "balanced"  # logit-adjusted by the local class prior, or plain "ce"
    schedule: str = "constant"  # learning rate within one knowledge acquisition, or "cosine"
    dream_shift: int = 0  # dreams translated by up to this many pixels whenever a model learns
                          # from them (clients, server model, student); 0: off
    keep_confident: float = 1.0  # fraction of each dream batch distilled: those whose z̄ is most
                                 # confident (the dreams the clients agree on); 1: all

    def __post_init__(self) -> None:
        require(self.local_loss in LOCAL_LOSSES, "distill.local_loss",
                f"must be one of {', '.join(LOCAL_LOSSES)}, got {self.local_loss!r}")
        require(self.dream_bn in DREAM_BN_MODES, "distill.dream_bn",
                f"must be one of {', '.join(DREAM_BN_MODES)}, got {self.dream_bn!r}")
        require(self.optimizer in OPTIMIZERS, "distill.optimizer",
                f"must be one of {', '.join(OPTIMIZERS)}, got {self.optimizer!r}")
        require(
            self.soft_labels in SOFT_LABEL_MODES,
            "distill.soft_labels",
            f"must be one of {', '.join(SOFT_LABEL_MODES)}, got {self.soft_labels!r}",
        )
        require(self.temperature > 0, "distill.temperature", "must be > 0")
        require(self.kd_weight >= 0, "distill.kd_weight", "must be >= 0")
        require(self.buffer_batches >= 1, "distill.buffer_batches", "must be >= 1")
        require(self.epochs >= 0, "distill.epochs", "must be >= 0")
        require(self.dream_batch_size >= 2, "distill.dream_batch_size", "must be >= 2")
        require(self.lr > 0, "distill.lr", "must be > 0")
        require(self.schedule in ("constant", "cosine"), "distill.schedule",
                f"must be 'constant' or 'cosine', got {self.schedule!r}")
        require(self.dream_shift >= 0, "distill.dream_shift", "must be >= 0 (0: off)")
        require(0 < self.keep_confident <= 1, "distill.keep_confident",
                f"must be in (0, 1] (1: distil every dream), got {self.keep_confident}")


@dataclass(frozen=True)
class ServerModelConfig:
    """The coordinator's model trained on dreams only: its accuracy measures dream quality."""

    model: str = "cnn"
    steps: int = 600
    lr: float = 0.05
    batch_size: int = 128

    def __post_init__(self) -> None:
        require(self.steps >= 0, "server_model.steps", "must be >= 0")
        require(self.lr > 0, "server_model.lr", "must be > 0")
        require(self.batch_size >= 2, "server_model.batch_size", "must be >= 2")

    def optimizer_config(self) -> OptimizerConfig:
        """The recipe for any model trained on dreams only (server model, adaptive-teaching student)."""
        return OptimizerConfig(self.lr, 0.9, 5e-4, self.batch_size)


@dataclass(frozen=True)
class TrainConfig:
    """Local supervised training (warm-up, Independent, FedAvg, Centralized)."""

    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 5e-4
    batch_size: int = 64
    optimizer: str = "sgd"  # sgd (with momentum) or adam
    local_loss: str = "ce"  # or "balanced": logit-adjusted by the client's class prior

    def __post_init__(self) -> None:
        require(self.local_loss in LOCAL_LOSSES, "train.local_loss",
                f"must be one of {', '.join(LOCAL_LOSSES)}, got {self.local_loss!r}")
        require(self.optimizer in OPTIMIZERS, "train.optimizer",
                f"must be one of {', '.join(OPTIMIZERS)}, got {self.optimizer!r}")
        require(self.lr > 0, "train.lr", "must be > 0")
        require(0 <= self.momentum < 1, "train.momentum", "must be in [0, 1)")
        require(self.weight_decay >= 0, "train.weight_decay", "must be >= 0")
        require(self.batch_size >= 2, "train.batch_size", "must be >= 2")

    def optimizer_config(self) -> OptimizerConfig:
        return OptimizerConfig(self.lr, self.momentum, self.weight_decay, self.batch_size,
                               self.optimizer)


@dataclass(frozen=True)
class SecureAggregationConfig:
    """Every sum of client values runs under secure aggregation (secagg/) unless disabled.

    Clips bound |(w_k/W)·v_k| per element (W: the largest client weight), so the fixed-point
    sum cannot wrap; elements beyond are clipped, counted, and reported in the round metrics.
    """

    enabled: bool = True
    # auto: the complete graph up to `complete_up_to` session members, SecAgg+ above
    graph: str = "auto"
    complete_up_to: int = 64
    # what auto's sparse graph is sized for (Bell et al. 2020): the fraction of members that may
    # collude with the coordinator, and that may drop out mid-step
    corrupt_rate: float = 0.05
    dropout_rate: float = 0.1
    threshold: int = 0  # 0: the smallest strict majority (tolerates the most dropouts)
    degree: int = 0  # secagg+ only; 0: ~3 log2 n
    # c: members that may collude with an ACTIVE coordinator (authenticated sessions). The
    # threshold is raised to floor((m + c)/2) + 1 per neighbourhood of m (complete: m = n), so
    # they cannot help it collect both of an honest member's secrets, and a session needs
    # c + 2 members; auto's SecAgg+ degree grows to keep t reachable. 0: the strict majority,
    # which stops the coordinator alone (and one accomplice at even m) and tolerates the most
    # dropouts; each unit of c costs about half a dropout.
    colluding_nodes: int = 0
    steps_per_block: int = 10
    dream_clip: float = 10.0
    logits_clip: float = 100.0
    parameters_clip: float = 100.0
    # auto: authenticated (signed keys, a consistency round) whenever every member has an
    # identity key (the coordinator's --identities roster, or an mTLS certificate that carries
    # one; `simulate` makes them in process); required: never an unauthenticated secure sum
    # (members without an identity are left out; a coordinator with no source of identities is
    # refused at start); off: never authenticated (nodes that pin identities then refuse).
    authentication: str = "auto"

    def __post_init__(self) -> None:
        require(self.authentication in ("auto", "required", "off"), "secagg.authentication",
                f"must be 'auto', 'required' or 'off', got {self.authentication!r}")
        require(self.graph in ("auto", "complete", "secagg+"), "secagg.graph",
                 f"must be 'auto', 'complete' or 'secagg+', got {self.graph!r}")
        require(self.complete_up_to >= 2, "secagg.complete_up_to",
                f"must be >= 2, got {self.complete_up_to}")
        for name in ("corrupt_rate", "dropout_rate"):
            value = getattr(self, name)
            require(0 <= value < 1, f"secagg.{name}", f"must be in [0, 1), got {value}")
        require(self.corrupt_rate + self.dropout_rate <= 0.9, "secagg.dropout_rate",
                "corrupt_rate + dropout_rate must be <= 0.9 (no sparse graph survives more), got "
                f"{self.corrupt_rate} + {self.dropout_rate}")
        require(self.threshold >= 0, "secagg.threshold", "must be >= 0 (0: automatic)")
        require(self.degree >= 0 and self.degree % 2 == 0, "secagg.degree", "must be an even int >= 0")
        require(self.colluding_nodes >= 0, "secagg.colluding_nodes",
                f"must be an int >= 0, got {self.colluding_nodes}")
        require(not (self.colluding_nodes and self.threshold), "secagg.colluding_nodes",
                "sizes the threshold itself; leave secagg.threshold at 0 (automatic)")
        require(self.steps_per_block >= 1, "secagg.steps_per_block", "must be >= 1")
        for name in ("dream_clip", "logits_clip", "parameters_clip"):
            require(getattr(self, name) > 0, f"secagg.{name}", "must be > 0")


@dataclass(frozen=True)
class RunConfig:
    strategy: str = "codream"
    dataset: str = "digits"
    clients: int = 4
    partition: str = "dirichlet:0.5"
    min_client_size: int = 10
    models: tuple[str, ...] = ("cnn",)
    seed: int = 0
    rounds: int = 5
    warmup_epochs: int = 10
    local_epochs: int = 1
    weighting: str = "samples"
    device: str = "auto"
    # torch threads in every process of the run (simulate, coordinator, each node): a part of
    # the run, so its numbers never depend on the machine's core count
    threads: int = 1
    # Client sampling (codream.client_sampling): the nodes of each round, drawn from the live ones
    # with a generator seeded by (seed, round); 0 or 1.0: every live node, a fraction in (0, 1),
    # or a count >= 2. Every sum of the round runs among them only; the others idle.
    clients_per_round: float = 0.0
    min_clients: int = 2  # the fewest a sampled round takes (when that many are live)
    # who gets knowledge acquisition (FedAvg: the new global parameters), the warm-up and the
    # evaluation in a sampled round: "all" live nodes, or only the "sampled" ones
    sampling_reach: str = "all"
    out: str = "runs/latest"
    train: TrainConfig = field(default_factory=TrainConfig)
    dream: DreamConfig = field(default_factory=DreamConfig)
    server_optimizer: ServerOptimizerConfig = field(default_factory=ServerOptimizerConfig)
    distill: DistillConfig = field(default_factory=DistillConfig)
    server_model: ServerModelConfig = field(default_factory=ServerModelConfig)
    secagg: SecureAggregationConfig = field(default_factory=SecureAggregationConfig)

    def __post_init__(self) -> None:
        require(
            self.strategy in STRATEGIES,
            "strategy",
            f"must be one of {', '.join(STRATEGIES)}; got {self.strategy!r}",
        )
        require(self.clients >= 1, "clients", f"must be >= 1, got {self.clients}")
        require(self.min_client_size >= 1, "min_client_size", "must be >= 1")
        require(self.rounds >= 0, "rounds", f"must be >= 0, got {self.rounds}")
        require(self.warmup_epochs >= 0, "warmup_epochs", "must be >= 0")
        require(self.local_epochs >= 0, "local_epochs", "must be >= 0")
        require(len(self.models) >= 1, "models", "name at least one model")
        require(
            re.fullmatch(r"iid|dirichlet:[0-9.eE+-]+", self.partition) is not None
            and partition_scheme_is_valid(self.partition),
            "partition",
            f"must be 'iid' or 'dirichlet:ALPHA' with ALPHA > 0, got {self.partition!r}",
        )
        require(self.threads >= 1, "threads", f"must be >= 1, got {self.threads}")
        require(not (self.secagg.enabled and self.secagg.colluding_nodes)  # c = 0: as before
                or self.clients >= self.secagg.colluding_nodes + 2,
                "secagg.colluding_nodes", f"{self.secagg.colluding_nodes} needs at least "
                f"{self.secagg.colluding_nodes + 2} clients (2 honest ones), got {self.clients}")
        self._check_sampling()
        require(
            self.weighting in ("samples", "equal"),
            "weighting",
            f"must be 'samples' or 'equal', got {self.weighting!r}",
        )
        require(
            self.device in ("auto", "cpu", "cuda") or self.device.startswith("cuda:"),
            "device",
            f"must be auto, cpu, cuda or cuda:N, got {self.device!r}",
        )
        require(
            self.server_optimizer.name in ("fedavg", "fedadam"),
            "server_optimizer.name",
            f"must be 'fedavg' or 'fedadam', got {self.server_optimizer.name!r}",
        )
        # ServerOptimizerConfig lives in the method core and does not validate itself.
        opt = self.server_optimizer
        require(opt.lr > 0, "server_optimizer.lr", f"must be > 0, got {opt.lr}")
        for name in ("beta1", "beta2"):
            value = getattr(opt, name)
            require(0 <= value < 1, f"server_optimizer.{name}", f"must be in [0, 1), got {value}")
        require(opt.tau > 0, "server_optimizer.tau", f"must be > 0, got {opt.tau}")
        STRATEGIES[self.strategy].check_config(self)

    def _check_sampling(self) -> None:
        c = self.clients_per_round
        require(math.isfinite(c) and c >= 0, "clients_per_round",
                f"must be 0 (every node), a fraction in (0, 1) or a count >= 2, got {c!r}")
        require(c <= 1 or (c.is_integer() and c <= self.clients), "clients_per_round",
                f"a count must be a whole number <= clients ({self.clients}), got {c!r}")
        require(self.min_clients >= 1, "min_clients", f"must be >= 1, got {self.min_clients}")
        sampling = not (c == 0 or c == 1.0)
        if sampling:
            require(self.min_clients <= self.clients, "min_clients",
                    f"must be <= clients ({self.clients}), got {self.min_clients}")
            require(not self.secagg.enabled or self.min_clients >= 2, "min_clients",
                    "must be >= 2 under secure aggregation (a sum hides each update among others)")
            fewest = self.secagg.colluding_nodes + 2  # c accomplices + 2 honest members
            require(not self.secagg.enabled or self.min_clients >= fewest, "min_clients",
                    f"must be >= secagg.colluding_nodes + 2 = {fewest} while sampling: a sampled "
                    f"round of fewer members releases nothing, got {self.min_clients}; use "
                    f"--set min_clients={fewest} or lower secagg.colluding_nodes")
        require(self.sampling_reach in ("all", "sampled"), "sampling_reach",
                f"must be 'all' or 'sampled', got {self.sampling_reach!r}")

    def model_for(self, client_index: int) -> str:
        """Clients take the listed models in turn, so 4 names give 4 architectures."""
        return self.models[client_index % len(self.models)]


# Fields that say where a run computes or writes, or how long it runs, not what a round computes:
# moving a run or extending it keeps its identity (coordinator checkpoints, node snapshots).
NOT_COMPUTATION = ("device", "out", "rounds")


def computation_of(config: RunConfig) -> RunConfig:
    """`config` with the NOT_COMPUTATION fields reset: what identifies a run's computation."""
    return replace(config, device=RunConfig.device, out=RunConfig.out, rounds=RunConfig.rounds)


__all__ = ["ConfigError", "RunConfig", "build", "dotted", "merge", "to_dict", "to_toml"]
