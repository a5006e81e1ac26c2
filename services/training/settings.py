"""Settings of the training service: the shared sections plus ``training`` (lake, schedule, gate)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from recmesh.core.settings import HttpSettings, ServiceSettings


class TrainingSection(BaseModel):
    """Lake sink, retraining schedule, promotion gate and tuning budget."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    lake_uri: str = Field(".local/lake", description="Parquet lake root: local path, file://, s3://, ...")
    sink_enabled: bool = Field(True, description="Run the lake sink (interactions + catalog → Parquet).")
    sink_batch_rows: int = Field(5000, ge=1, description="Max records per lake file and partition.")
    sink_batch_seconds: float = Field(2.0, gt=0, description="Max seconds the sink waits to fill a batch.")
    model: str = Field("als", description="Registered model the scheduler retrains.")
    params: dict[str, Any] = Field(default_factory=dict, description="Model parameters (JSON object).")
    retrain_every_minutes: float | None = Field(
        60.0, gt=0, description="Retrain this often (None = only on new events)."
    )
    retrain_after_events: int | None = Field(
        None, ge=1, description="Also retrain once this many new rows reached the lake since the last run."
    )
    retrain_on_start: bool = Field(False, description="Train once right after start.")
    window_days: float | None = Field(
        30.0, gt=0, description="Train on the last N days of the lake (None = everything)."
    )
    split: str = Field("per-user-temporal:0.2", description="Held-out split of each run.")
    eval_max_users: int = Field(5000, ge=1, description="Test users sampled for evaluation (full ranking).")
    min_interactions: int = Field(100, ge=1, description="Skip a scheduled run with fewer rows than this.")
    gate_metric: str = Field("ndcg@10", description="Metric the promotion gate compares.")
    gate_margin: float = Field(
        0.01, ge=0, description="Relative margin a candidate must beat the champion by (0.01 = 1%)."
    )
    tune_trials: int = Field(0, ge=0, description="Optuna trials per scheduled run (0 = no tuning).")
    tune_minutes: float | None = Field(None, gt=0, description="Optuna time budget per run (minutes).")
    seed: int = Field(42, description="Seed of splits, sampling, tuning and models.")
    spark_master: str = Field(
        "local[*]", description="Spark master for spark_als (e.g. spark://host:7077, k8s://https://...)."
    )
    spark_driver_memory: str = Field("1g", description="spark.driver.memory for spark_als.")
    spark_shuffle_partitions: int = Field(4, ge=1, description="spark.sql.shuffle.partitions for spark_als.")
    group_id: str = Field("recmesh-training-lake", description="Consumer group of the lake sink.")


class TrainingSettings(ServiceSettings):
    """``RECMESH_TRAINING__*`` on top of the shared sections; HTTP port 8004 (health + metrics)."""

    service_name: str = "training"
    http: HttpSettings = Field(default_factory=lambda: HttpSettings(port=8004))  # type: ignore[call-arg]
    training: TrainingSection = Field(default_factory=TrainingSection)  # type: ignore[arg-type]
