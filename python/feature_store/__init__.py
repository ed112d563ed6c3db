"""feature_store: a Python client for the feature-store service.

import feature_store
fs = feature_store.Client()                       # $FEATURE_STORE_URL, $FEATURE_STORE_API_KEY
fs.create_table("payments", df, event_time_column="ts")
fs.ingest("payments", df)
fs.register_feature("spend", "payments", "user_id",
                    aggregations=[feature_store.Aggregation("amount", "sum", ["1h", "7d"])])
training = fs.get_training_set(labels, ["spend"])  # pandas in, pandas out
fs.get_online_features(["spend"], ["u1", "u2"]).to_pandas()
"""

from .client import Client
from .errors import AccessDenied, FeatureStoreError, Invalid, NotFound, Overloaded, ServerError
from .models import (
    Aggregation,
    ComputeResult,
    Feature,
    IngestResult,
    Snapshot,
    Stream,
    Table,
    TrainingDataset,
    Version,
)
from .online import OnlineFeatures

__all__ = [
    "AccessDenied",
    "Aggregation",
    "Client",
    "ComputeResult",
    "Feature",
    "FeatureStoreError",
    "IngestResult",
    "Invalid",
    "NotFound",
    "OnlineFeatures",
    "Overloaded",
    "ServerError",
    "Snapshot",
    "Stream",
    "Table",
    "TrainingDataset",
    "Version",
]

__version__ = "0.1.0"
