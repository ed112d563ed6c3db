//! Raw tables that follow a stream: setting, showing and stopping it. Following itself (one
//! committing replica per stream, micro-batches into Delta with the offsets in the same commit)
//! is in `follow`; reading Kafka in `kafka`, NATS JetStream in `nats`, either through
//! `source`; messages become rows (or are set aside) in `engine::messages`.

mod follow;
mod kafka;
mod nats;
mod source;

pub use follow::{release, spawn};

use super::{ingest, lookup, Result, ServiceError};
use crate::clock::Clock;
use crate::model::{StreamPartition, StreamResponse, StreamSource};
use crate::offline::OfflineStore;
use crate::store::{Store, StreamRow};

/// Bounds of the batching settings, and their defaults.
const MAX_BATCH_EVENTS: u32 = 100_000;
const DEFAULT_BATCH_EVENTS: u32 = 10_000;
const BATCH_INTERVAL_MS: std::ops::RangeInclusive<u32> = 10..=60_000;
const DEFAULT_BATCH_INTERVAL_MS: u32 = 1_000;

/// Make the table follow `source` (or change what it follows). The table must be one this
/// service stores, with a schema: messages are checked against it as ingested rows are.
pub async fn put(
    store: &Store,
    offline: &OfflineStore,
    clock: &Clock,
    raw_table_id: i64,
    source: StreamSource,
) -> Result<StreamResponse> {
    let source = checked(source)?;
    // The same refusals as an ingest: an external dataset, a table without a schema.
    let (table, _) = ingest::target(store, raw_table_id).await?;
    let existing = store.get_stream(raw_table_id).await?;
    let rejected = match &existing {
        Some(row) => row.rejected_location.clone(),
        None => offline.new_rejected_path(raw_table_id),
    };
    // Made now, so a client can read it at once, and a bad data location fails here.
    offline
        .create_rejected(&offline.resolve(&rejected)?)
        .await?;
    let text = serde_json::to_string(&source).map_err(ServiceError::fault)?;
    let row = match existing {
        Some(row) if row.source == text => row,
        _ => {
            store
                .put_stream(table.id, &text, &rejected, clock.now())
                .await?
        }
    };
    present(offline, clock, row)
}

pub async fn get(
    store: &Store,
    offline: &OfflineStore,
    clock: &Clock,
    raw_table_id: i64,
) -> Result<StreamResponse> {
    lookup::table(store, raw_table_id).await?;
    let row = store
        .get_stream(raw_table_id)
        .await?
        .ok_or_else(|| not_following(raw_table_id))?;
    present(offline, clock, row)
}

/// Stop following. What was committed stays in the table; the follower stops at its next
/// lease renewal (the row it renews is gone), before committing anything more.
pub async fn delete(store: &Store, raw_table_id: i64) -> Result<()> {
    lookup::table(store, raw_table_id).await?;
    if store.delete_stream(raw_table_id).await? {
        Ok(())
    } else {
        Err(not_following(raw_table_id))
    }
}

fn not_following(raw_table_id: i64) -> ServiceError {
    ServiceError::NotFound(format!(
        "Raw table with ID {raw_table_id} does not follow a stream"
    ))
}

fn present(offline: &OfflineStore, clock: &Clock, row: StreamRow) -> Result<StreamResponse> {
    let source: StreamSource = serde_json::from_str(&row.source).map_err(ServiceError::fault)?;
    let held = row.holder.is_some() && row.expires_at > clock.now();
    let partitions = match row.partitions.as_deref() {
        Some(text) => serde_json::from_str(text).map_err(ServiceError::fault)?,
        None if source.kind == "kafka" => Vec::new(),
        None => vec![StreamPartition {
            partition: source.stream.clone().unwrap_or_default(),
            committed_offset: row.committed_offset,
            lag: row.lag,
        }],
    };
    let status = if held || row.status == "starting" {
        row.status.clone()
    } else {
        "waiting".to_string()
    };
    let reason = match status.as_str() {
        "waiting" => Some("no replica holds the stream's lease".to_string()),
        _ => row.reason.clone(),
    };
    Ok(StreamResponse {
        raw_table_id: row.raw_table_id,
        partitions,
        kind: source.kind,
        brokers: source.brokers,
        topic: source.topic,
        url: source.url,
        stream: source.stream,
        subject: source.subject,
        format: source.format,
        max_batch_events: source.max_batch_events,
        max_batch_interval_ms: source.max_batch_interval_ms,
        status,
        reason,
        committer: if held { row.holder.clone() } else { None },
        events_committed: row.events_committed,
        rejected: row.rejected,
        events_per_second: row.events_per_second,
        rejected_location: offline.resolve(&row.rejected_location)?.uri(),
        last_commit_at: row.last_commit_at,
        created_at: row.created_at,
        updated_at: row.updated_at,
    })
}

/// The source with its defaults filled in, or a 400 naming what is wrong.
fn checked(mut source: StreamSource) -> Result<StreamSource> {
    let invalid = |why: String| Err(ServiceError::Invalid(why));
    match source.kind.as_str() {
        "nats" => checked_nats(&mut source)?,
        "kafka" => checked_kafka(&mut source)?,
        other => {
            return invalid(format!(
                "Unknown stream type {other:?}; use \"kafka\" or \"nats\""
            ))
        }
    }
    match source.format.as_deref() {
        None | Some("json") => source.format = Some("json".into()),
        Some(other) => {
            return invalid(format!(
                "Unknown stream format {other:?}; \"json\" (one object per message) is supported"
            ))
        }
    }
    let events = source.max_batch_events.unwrap_or(DEFAULT_BATCH_EVENTS);
    if !(1..=MAX_BATCH_EVENTS).contains(&events) {
        return invalid(format!(
            "\"max_batch_events\" must be 1 to {MAX_BATCH_EVENTS}, got {events}"
        ));
    }
    source.max_batch_events = Some(events);
    let interval = source
        .max_batch_interval_ms
        .unwrap_or(DEFAULT_BATCH_INTERVAL_MS);
    if !BATCH_INTERVAL_MS.contains(&interval) {
        return invalid(format!(
            "\"max_batch_interval_ms\" must be {} to {}, got {interval}",
            BATCH_INTERVAL_MS.start(),
            BATCH_INTERVAL_MS.end()
        ));
    }
    source.max_batch_interval_ms = Some(interval);
    Ok(source)
}

/// A Kafka source: brokers as `host:port` pairs, a topic name Kafka allows, nothing of NATS.
fn checked_kafka(source: &mut StreamSource) -> Result<()> {
    let invalid = |why: String| Err(ServiceError::Invalid(why));
    if source.url.is_some() || source.stream.is_some() || source.subject.is_some() {
        return invalid(
            "A kafka stream takes \"brokers\" and \"topic\", not \"url\", \"stream\" or \"subject\""
                .into(),
        );
    }
    let Some(brokers) = source.brokers.as_deref() else {
        return invalid("A kafka stream needs \"brokers\" (host:port, separated by commas)".into());
    };
    let mut listed = Vec::new();
    for broker in brokers.split(',').map(str::trim) {
        let fits = broker.rsplit_once(':').is_some_and(|(host, port)| {
            !host.is_empty()
                && !host
                    .chars()
                    .any(|c| c.is_whitespace() || c.is_control() || matches!(c, '/' | '@'))
                && port.parse::<u16>().is_ok_and(|p| p > 0)
        });
        if !fits {
            return invalid(format!(
                "\"brokers\" {brokers:?} must be host:port pairs separated by commas \
                 (no scheme, no credentials)"
            ));
        }
        listed.push(broker);
    }
    source.brokers = Some(listed.join(","));
    let Some(topic) = source.topic.as_deref() else {
        return invalid("A kafka stream needs \"topic\"".into());
    };
    // Kafka's own rule for topic names.
    if topic.is_empty()
        || topic.len() > 249
        || topic == "."
        || topic == ".."
        || !topic
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
    {
        return invalid(format!(
            "\"topic\" {topic:?} is not a Kafka topic name (1 to 249 of a-z A-Z 0-9 . _ -)"
        ));
    }
    Ok(())
}

/// A NATS source: a `nats://host:port` URL (`tls://` to insist on TLS) without credentials,
/// a JetStream stream name, an optional subject filter, nothing of Kafka.
fn checked_nats(source: &mut StreamSource) -> Result<()> {
    let invalid = |why: String| Err(ServiceError::Invalid(why));
    if source.brokers.is_some() || source.topic.is_some() {
        return invalid(
            "A nats stream takes \"url\", \"stream\" and \"subject\", not \"brokers\" or \"topic\""
                .into(),
        );
    }
    let Some(url) = source.url.as_deref().map(str::trim) else {
        return invalid("A nats stream needs \"url\" (nats://host:port)".into());
    };
    let parsed = url::Url::parse(url)
        .map_err(|e| ServiceError::Invalid(format!("\"url\" {url:?} is not a URL: {e}")))?;
    if !matches!(parsed.scheme(), "nats" | "tls") || parsed.host_str().is_none_or(str::is_empty) {
        return invalid(format!(
            "\"url\" {url:?} must be nats://host:port (or tls://host:port)"
        ));
    }
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return invalid("\"url\" must not hold credentials: they would be stored and shown".into());
    }
    if parsed.path().len() > 1 || parsed.query().is_some() {
        return invalid(format!(
            "\"url\" {url:?} must be nats://host:port, nothing after it"
        ));
    }
    source.url = Some(url.to_string());
    let Some(stream) = source.stream.as_deref() else {
        return invalid("A nats stream needs \"stream\", the JetStream stream's name".into());
    };
    // NATS refuses these in stream names; they are also what a subject would read as a token.
    if stream.is_empty()
        || stream.len() > 255
        || stream.chars().any(|c| {
            c.is_whitespace() || c.is_control() || matches!(c, '.' | '*' | '>' | '/' | '\\')
        })
    {
        return invalid(format!(
            "\"stream\" {stream:?} is not a JetStream stream name (1 to 255 characters, none of \
             . * > / \\ or spaces)"
        ));
    }
    if let Some(subject) = source.subject.as_deref() {
        if subject.is_empty()
            || subject.len() > 255
            || subject.chars().any(|c| c.is_whitespace() || c.is_control())
            || subject.split('.').any(str::is_empty)
        {
            return invalid(format!(
                "\"subject\" {subject:?} is not a NATS subject filter"
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nats(url: &str, stream: &str) -> StreamSource {
        StreamSource {
            kind: "nats".into(),
            brokers: None,
            topic: None,
            url: Some(url.into()),
            stream: Some(stream.into()),
            subject: None,
            format: None,
            max_batch_events: None,
            max_batch_interval_ms: None,
        }
    }

    fn refusal(source: StreamSource) -> String {
        match checked(source) {
            Err(ServiceError::Invalid(why)) => why,
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    #[test]
    fn a_nats_source_gets_its_defaults() {
        let source = checked(nats("nats://127.0.0.1:4222", "TX")).unwrap();
        assert_eq!(source.format.as_deref(), Some("json"));
        assert_eq!(source.max_batch_events, Some(DEFAULT_BATCH_EVENTS));
        assert_eq!(
            source.max_batch_interval_ms,
            Some(DEFAULT_BATCH_INTERVAL_MS)
        );
    }

    #[test]
    fn credentials_in_the_url_are_refused() {
        assert!(refusal(nats("nats://u:p@127.0.0.1:4222", "TX")).contains("credentials"));
    }

    #[test]
    fn other_schemes_and_stream_names_with_dots_are_refused() {
        assert!(refusal(nats("http://127.0.0.1:4222", "TX")).contains("nats://"));
        assert!(refusal(nats("nats://127.0.0.1:4222", "a.b")).contains("stream name"));
        assert!(checked(nats("tls://127.0.0.1:4222", "TX")).is_ok());
    }

    fn kafka(brokers: &str, topic: &str) -> StreamSource {
        StreamSource {
            kind: "kafka".into(),
            brokers: Some(brokers.into()),
            topic: Some(topic.into()),
            ..nats("nats://127.0.0.1:4222", "TX")
        }
    }

    fn kafka_only(brokers: &str, topic: &str) -> StreamSource {
        StreamSource {
            url: None,
            stream: None,
            ..kafka(brokers, topic)
        }
    }

    #[test]
    fn a_kafka_source_takes_brokers_and_a_topic_and_gets_its_defaults() {
        let source = checked(kafka_only(" 127.0.0.1:9092, kafka-2:9093 ", "tx.events_1")).unwrap();
        assert_eq!(
            source.brokers.as_deref(),
            Some("127.0.0.1:9092,kafka-2:9093")
        );
        assert_eq!(source.format.as_deref(), Some("json"));
        assert_eq!(source.max_batch_events, Some(DEFAULT_BATCH_EVENTS));
    }

    #[test]
    fn kafka_brokers_and_topics_that_kafka_would_not_take_are_refused() {
        for brokers in [
            "",
            "host",
            "host:0",
            "host:x",
            "kafka://host:9092",
            "u:p@host:9092",
        ] {
            assert!(
                refusal(kafka_only(brokers, "tx")).contains("host:port"),
                "{brokers}"
            );
        }
        for topic in ["", "..", "a b", "tx/1", &"t".repeat(250)] {
            assert!(
                refusal(kafka_only("h:9092", topic)).contains("topic"),
                "{topic}"
            );
        }
        assert!(refusal(kafka("h:9092", "tx")).contains("not \"url\""));
        let mut nats_with_topic = nats("nats://127.0.0.1:4222", "TX");
        nats_with_topic.topic = Some("tx".into());
        assert!(refusal(nats_with_topic).contains("not \"brokers\" or \"topic\""));
    }

    #[test]
    fn batch_settings_out_of_range_are_refused() {
        let mut source = nats("nats://127.0.0.1:4222", "TX");
        source.max_batch_events = Some(0);
        assert!(refusal(source).contains("max_batch_events"));
        let mut source = nats("nats://127.0.0.1:4222", "TX");
        source.max_batch_interval_ms = Some(5);
        assert!(refusal(source).contains("max_batch_interval_ms"));
    }
}
