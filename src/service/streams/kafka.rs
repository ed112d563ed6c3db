//! Kafka as a source: one consumer that assigns itself every partition of the topic (no
//! consumer group: nothing is committed to the broker) at the offsets after the last ones
//! committed to the table. Each partition is a lane of the stream with offsets of its own,
//! the broker's own offsets.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use rdkafka::client::ClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::{Consumer, ConsumerContext, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::{Message as _, Offset, TopicPartitionList};

use super::source::Received;
use crate::config::KafkaAuth;
use crate::engine::messages::Message;
use crate::model::StreamSource;

/// How long asking the brokers for the topic's partitions may take.
const METADATA_TIMEOUT: Duration = Duration::from_secs(5);
/// ... and asking at each lease renewal whether they answer (the renewals wait for it).
const PROBE_TIMEOUT: Duration = Duration::from_millis(500);
/// Brokers are reported unreachable after this many looks in a row that got no answer, so
/// one slow answer under load does not show the stream `failing`.
const UNANSWERED_LOOKS: u32 = 2;

type Kafka = StreamConsumer<Noticed>;

/// What librdkafka reported on its own: a refused TLS handshake or SASL login reaches no
/// call's result (a metadata request only fails with "broker transport failure"), so it is
/// kept here to say why in the stream's `reason`. Its error log line (`FAIL`: what the
/// broker refused) says more than the error event after it ("1/1 brokers are down"), so it
/// is preferred.
#[derive(Default)]
struct Noticed {
    logged: Mutex<Option<String>>,
    error: Mutex<Option<String>>,
}

fn put(slot: &Mutex<Option<String>>, value: Option<String>) {
    if let Ok(mut slot) = slot.lock() {
        *slot = value;
    }
}

impl Noticed {
    /// Forget what was reported (the brokers answered).
    fn clear(&self) {
        put(&self.logged, None);
        put(&self.error, None);
    }

    fn last(&self) -> Option<String> {
        let get = |slot: &Mutex<Option<String>>| slot.lock().ok().and_then(|s| s.clone());
        get(&self.logged).or_else(|| get(&self.error))
    }
}

impl ClientContext for Noticed {
    fn log(&self, level: RDKafkaLogLevel, facility: &str, message: &str) {
        tracing::debug!(?level, facility, message, "librdkafka");
        if (level as i32) <= RDKafkaLogLevel::Error as i32 {
            // Without librdkafka's thread name: `[thrd:ssl://host:port/bootstrap]: `.
            let message = message
                .strip_prefix("[thrd:")
                .and_then(|m| m.split_once("]: "))
                .map_or(message, |(_, rest)| rest);
            put(&self.logged, Some(message.to_string()));
        }
    }

    fn error(&self, error: KafkaError, reason: &str) {
        tracing::debug!(%error, reason, "librdkafka");
        put(&self.error, Some(reason.to_string()));
    }
}

impl ConsumerContext for Noticed {}

pub struct KafkaSource {
    consumer: Arc<Kafka>,
    topic: String,
    /// The topic's partitions, in lane order.
    partitions: Vec<i32>,
    /// Each partition's high watermark (the offset its next message will get), as of the last
    /// look (`trouble`): what the lag is counted from.
    high: Vec<i64>,
    /// The topic's partitions changed: it is opened again, with all of them.
    changed: Option<String>,
    /// Looks in a row that got no answer.
    unanswered: u32,
    /// `topic {name} at {brokers}`, for errors.
    what: String,
}

/// A consumer of `brokers` (it has a group id, which librdkafka's consumer queue needs, but
/// never joins the group nor commits to it), with this service's TLS and SASL settings.
fn consumer(brokers: &str, auth: &KafkaAuth) -> Result<Kafka, String> {
    let mut config = ClientConfig::new();
    for (name, value) in auth.settings() {
        config.set(name, value);
    }
    config
        .set("bootstrap.servers", brokers)
        .set("group.id", "feature-store")
        .set("client.id", "feature-store")
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("enable.partition.eof", "false")
        // Where a partition no longer holds the offset asked for (retention deleted it, or
        // the topic was made again), what it still holds is read.
        .set("auto.offset.reset", "earliest")
        // Served within 100 ms: the broker answers a fetch as soon as it has a message.
        .set("fetch.wait.max.ms", "20")
        // What librdkafka fetches ahead of the reader, all partitions together, is bounded
        // (its default is 64 MiB): the stream's memory is stated in docs/streams.md.
        .set("queued.max.messages.kbytes", "32768")
        .set("socket.connection.setup.timeout.ms", "5000")
        .set("reconnect.backoff.max.ms", "2000")
        .set("log_level", "3")
        .create_with_context(Noticed::default())
        .map_err(|e| format!("could not make a Kafka consumer for {brokers}: {e}"))
}

/// The topic's partitions, as the brokers know them.
async fn partitions(
    consumer: Arc<Kafka>,
    topic: String,
    timeout: Duration,
) -> Result<Vec<i32>, String> {
    tokio::task::spawn_blocking(move || {
        let metadata = consumer
            .fetch_metadata(Some(&topic), timeout)
            .map_err(|e| format!("could not read the metadata of topic {topic:?}: {e}"))?;
        consumer.context().clear();
        let Some(found) = metadata.topics().iter().find(|t| t.name() == topic) else {
            return Err(format!("the brokers do not know topic {topic:?}"));
        };
        if let Some(error) = found.error() {
            return Err(format!(
                "the brokers refuse topic {topic:?}: {}",
                rdkafka::error::RDKafkaErrorCode::from(error)
            ));
        }
        let mut ids: Vec<i32> = found.partitions().iter().map(|p| p.id()).collect();
        ids.sort_unstable();
        if ids.is_empty() {
            return Err(format!("topic {topic:?} has no partitions"));
        }
        Ok(ids)
    })
    .await
    .map_err(|e| format!("reading the topic's metadata stopped: {e}"))?
}

impl KafkaSource {
    /// The topic's partitions (the stream's lanes, in order), asked of the brokers.
    pub async fn lanes(source: &StreamSource, auth: &KafkaAuth) -> Result<Vec<i32>, String> {
        let (brokers, topic) = names(source);
        let consumer = Arc::new(consumer(brokers, auth)?);
        let found = partitions(consumer.clone(), topic.to_string(), METADATA_TIMEOUT).await;
        if found.is_err() {
            // Nothing else polls this consumer (it reads no partition): its queued events,
            // a refused handshake or login among them, are taken here, so `why` has them.
            for _ in 0..100 {
                match tokio::time::timeout(Duration::from_millis(10), consumer.recv()).await {
                    Ok(Err(_)) => continue,
                    _ => break,
                }
            }
        }
        found.map_err(|e| e + &why(&consumer))
    }

    /// Connect and read every partition of `lanes` from its offset in `from` (the next offset
    /// to read; the same order).
    pub async fn open(
        source: &StreamSource,
        lanes: &[i32],
        from: &[i64],
        auth: &KafkaAuth,
    ) -> Result<KafkaSource, String> {
        let (brokers, topic) = names(source);
        let consumer = Arc::new(consumer(brokers, auth)?);
        let mut assignment = TopicPartitionList::new();
        for (partition, offset) in lanes.iter().zip(from) {
            assignment
                .add_partition_offset(topic, *partition, Offset::Offset((*offset).max(0)))
                .map_err(|e| e.to_string())?;
        }
        consumer
            .assign(&assignment)
            .map_err(|e| format!("could not read topic {topic:?}: {e}"))?;
        Ok(KafkaSource {
            consumer,
            topic: topic.to_string(),
            partitions: lanes.to_vec(),
            high: from.to_vec(),
            changed: None,
            unanswered: 0,
            what: format!("topic {topic:?} at {brokers}"),
        })
    }

    /// The next message; an error when the consumer cannot go on (the caller opens it
    /// again). A broker that went away is not one: the consumer reconnects by itself, and
    /// `trouble` tells meanwhile.
    pub async fn next(&mut self) -> Result<Received, String> {
        if let Some(changed) = self.changed.take() {
            return Err(changed);
        }
        loop {
            match self.consumer.recv().await {
                Ok(message) => {
                    let partition = message.partition();
                    let Some(lane) = self.partitions.iter().position(|p| *p == partition) else {
                        continue;
                    };
                    let offset = message.offset();
                    let pending = self
                        .high
                        .get(lane)
                        .map_or(0, |high| (high - offset - 1).max(0) as u64);
                    return Ok(Received {
                        lane,
                        message: Message {
                            offset,
                            payload: Bytes::copy_from_slice(message.payload().unwrap_or_default()),
                        },
                        pending,
                    });
                }
                Err(KafkaError::MessageConsumptionFatal(code)) => {
                    return Err(format!("reading {} failed: {code}", self.what))
                }
                // Transport failures, brokers down, a topic gone: librdkafka goes on trying.
                Err(e) => tracing::debug!(error = %e, source = %self.what, "reading Kafka"),
            }
        }
    }

    /// Why the brokers cannot be read now, if they cannot (asked each time, briefly; said
    /// after `UNANSWERED_LOOKS` looks in a row without an answer). A topic whose partitions
    /// changed is not trouble, but makes the next `next` fail, so the topic is opened again
    /// with every partition it has.
    pub async fn trouble(&mut self) -> Option<String> {
        let now = partitions(self.consumer.clone(), self.topic.clone(), PROBE_TIMEOUT).await;
        if now.as_ref().is_ok_and(|now| *now == self.partitions) {
            self.high = watermarks(&self.consumer, &self.topic, &self.partitions)
                .await
                .unwrap_or_else(|| self.high.clone());
        }
        self.unanswered = if now.is_ok() { 0 } else { self.unanswered + 1 };
        match now {
            Ok(now) if now != self.partitions => {
                self.changed = Some(format!(
                    "{} has {} partitions now (was {}): reading it again",
                    self.what,
                    now.len(),
                    self.partitions.len()
                ));
                None
            }
            Ok(_) => None,
            Err(_) if self.unanswered < UNANSWERED_LOOKS => None,
            Err(e) => Some(format!(
                "cannot reach {}: {e}{}",
                self.what,
                why(&self.consumer)
            )),
        }
    }
}

/// The last error librdkafka reported of its own, as ` (…)` to follow a reason; empty if
/// none since the last answer. (The reader's `recv` polls the events of a running consumer.)
fn why(consumer: &Kafka) -> String {
    consumer
        .context()
        .last()
        .map(|last| format!(" ({last})"))
        .unwrap_or_default()
}

/// Each partition's high watermark, asked of the brokers; `None` if any could not be had.
async fn watermarks(consumer: &Arc<Kafka>, topic: &str, partitions: &[i32]) -> Option<Vec<i64>> {
    let (consumer, topic, partitions) = (consumer.clone(), topic.to_string(), partitions.to_vec());
    tokio::task::spawn_blocking(move || {
        partitions
            .iter()
            .map(|p| {
                consumer
                    .fetch_watermarks(&topic, *p, PROBE_TIMEOUT)
                    .ok()
                    .map(|(_, high)| high)
            })
            .collect()
    })
    .await
    .ok()
    .flatten()
}

fn names(source: &StreamSource) -> (&str, &str) {
    (
        source.brokers.as_deref().unwrap_or_default(),
        source.topic.as_deref().unwrap_or_default(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn brokers_that_do_not_answer_are_reported_at_the_second_look_in_a_row() {
        // A port nothing listens on: every look goes unanswered.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .unwrap();
        let source: StreamSource = serde_json::from_value(serde_json::json!({
            "type": "kafka", "brokers": format!("127.0.0.1:{port}"), "topic": "tx"}))
        .unwrap();
        let mut kafka = KafkaSource::open(&source, &[0], &[0], &KafkaAuth::default())
            .await
            .unwrap();
        assert_eq!(kafka.trouble().await, None, "one look without an answer");
        let reason = kafka.trouble().await.expect("two looks without an answer");
        assert!(
            reason.starts_with(&format!("cannot reach topic \"tx\" at 127.0.0.1:{port}")),
            "{reason}"
        );
        assert!(kafka.trouble().await.is_some(), "still unanswered");
    }
}
