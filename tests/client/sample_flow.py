"""The README's sample flow through a client generated from the served /openapi.json by
openapi-python-client: register a table, ingest rows, define a feature, compute a version,
serve a vector by feature name and a batch, see it turn stale on ingest, schedule refresh, list
jobs. Exits non-zero on the first answer that differs.

Usage: python3 sample_flow.py <base-url>   (with the generated package `client` on PYTHONPATH)
"""

import sys

from client import AuthenticatedClient
from client.api.features import create_feature
from client.api.ingest import ingest_rows
from client.api.raw_tables import create_raw_table
from client.api.serving import get_feature_vector, get_feature_vectors_batch
from client.api.jobs import list_jobs
from client.api.versions import compute_version, list_versions, update_version
from client.models import (
    BatchRequest,
    ComputeRequest,
    FeatureCreate,
    IngestRequest,
    IngestRequestDataItem,
    RawTableCreate,
    RawTableCreateSchemaDefinitionType0,
    VersionUpdate,
)


def expect(condition, what):
    if not condition:
        sys.exit(f"generated client flow: {what}")
    print(f"ok: {what}")


def main(base_url):
    # No API keys on the server under test: the token is sent and not looked at.
    api = AuthenticatedClient(base_url=base_url, token="no-keys-configured", raise_on_unexpected_status=True)

    schema = RawTableCreateSchemaDefinitionType0.from_dict(
        {"user_id": "string", "transaction_amount": "float", "transaction_date": "string"}
    )
    table = create_raw_table.sync(client=api, body=RawTableCreate(name="user_transactions", schema_definition=schema))
    expect(table.name == "user_transactions" and table.id >= 1, f"registered raw table {table.id}")

    rows = [
        {"user_id": "user_001", "transaction_amount": 100.5, "transaction_date": "2024-01-01"},
        {"user_id": "user_001", "transaction_amount": 75.25, "transaction_date": "2024-01-02"},
        {"user_id": "user_002", "transaction_amount": 200.0, "transaction_date": "2024-01-01"},
    ]
    ingested = ingest_rows.sync(
        client=api,
        body=IngestRequest(raw_table_id=table.id, data=[IngestRequestDataItem.from_dict(r) for r in rows]),
    )
    expect(ingested.records_ingested == 3, "ingested 3 rows")

    feature = create_feature.sync(
        client=api,
        body=FeatureCreate(
            name="avg_transaction_amount",
            raw_table_id=table.id,
            entity_key="user_id",
            computation_logic="SELECT user_id, AVG(transaction_amount) AS avg_amount, COUNT(*) AS n FROM data GROUP BY user_id",
        ),
    )
    expect(feature.entity_key == "user_id", f"created feature {feature.id}")

    computed = compute_version.sync(feature.id, client=api, body=ComputeRequest(version="v1"))
    expect(computed.vectors_created == 2, "computed v1 over the stored rows: 2 vectors")
    versions = list_versions.sync(feature.id, client=api)
    expect([v.version for v in versions] == ["v1"] and versions[0].entity_count == 2, "v1 listed with 2 entities")

    vector = get_feature_vector.sync(client=api, entity_id="user_001", feature_name="avg_transaction_amount")
    values = vector.feature_values.to_dict()
    expect(values == {"avg_amount": 87.875, "n": 2}, f"vector of user_001 by feature name: {values}")
    expect(vector.feature_version_id == computed.feature_version_id, "served by the computed version")

    batch = get_feature_vectors_batch.sync(
        client=api,
        body=BatchRequest(entity_ids=["user_001", "user_002", "nobody"], features=["avg_transaction_amount"]),
    )
    by_entity = {row.entity_id: row for row in batch.results}
    expect(
        by_entity["user_002"].features.to_dict()["avg_transaction_amount"] == {"avg_amount": 200.0, "n": 1},
        "batch: user_002's values",
    )
    expect(by_entity["nobody"].missing == ["avg_transaction_amount"], "batch: an unknown entity is listed as missing")
    expect(vector.stale is False and vector.data_as_of is not None, f"the vector says it is fresh, as of {vector.data_as_of}")

    more = [{"user_id": "user_002", "transaction_amount": 100.0, "transaction_date": "2024-01-03"}]
    ingest_rows.sync(
        client=api,
        body=IngestRequest(raw_table_id=table.id, data=[IngestRequestDataItem.from_dict(r) for r in more]),
    )
    vector = get_feature_vector.sync(client=api, entity_id="user_002", feature_name="avg_transaction_amount")
    expect(vector.stale is True, "after an ingest the vector says it is stale")

    version = update_version.sync(
        feature.id, computed.feature_version_id, client=api, body=VersionUpdate(refresh_every_seconds=3600)
    )
    expect(version.refresh_every_seconds == 3600 and version.stale is True, "v1 refreshes hourly and is stale")
    jobs = list_jobs.sync(client=api, feature_id=feature.id)
    expect([(j.kind, j.status) for j in jobs][-1] == ("compute", "succeeded"), "the compute is a succeeded job")


if __name__ == "__main__":
    main(sys.argv[1])
