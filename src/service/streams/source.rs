//! What a follower reads, whichever the broker: messages in lanes (a Kafka topic's
//! partitions; a NATS stream is one lane), each lane with offsets of its own and an
//! application id of its own in the table's Delta transactions.

use super::kafka::KafkaSource;
use super::nats::NatsSource;
use crate::config::{KafkaAuth, NatsAuth, NatsTls};
use crate::engine::messages::Message;
use crate::model::StreamSource;

/// A message, its lane, and how many more its lane has pending after it (the lag).
pub struct Received {
    pub lane: usize,
    pub message: Message,
    pub pending: u64,
}

/// One lane of a stream: what the stream's state calls it, and the `txn` application id its
/// offsets are committed under (the source in it, so offsets of another source are never
/// taken for this one's).
#[derive(Debug, Clone)]
pub struct LaneName {
    pub partition: String,
    pub app: String,
}

/// How this service authenticates to the brokers (from its environment).
#[derive(Clone, Copy)]
pub struct Auth<'a> {
    pub nats: &'a NatsAuth,
    pub nats_tls: &'a NatsTls,
    pub kafka: &'a KafkaAuth,
}

/// The source's lanes, in order (a Kafka topic's partitions, asked of its brokers).
pub async fn lanes(source: &StreamSource, auth: Auth<'_>) -> Result<Vec<LaneName>, String> {
    match source.kind.as_str() {
        "kafka" => {
            let topic = source.topic.clone().unwrap_or_default();
            Ok(KafkaSource::lanes(source, auth.kafka)
                .await?
                .into_iter()
                .map(|p| LaneName {
                    partition: p.to_string(),
                    app: format!("feature-store/kafka/{topic}/{p}"),
                })
                .collect())
        }
        _ => {
            let stream = source.stream.clone().unwrap_or_default();
            Ok(vec![LaneName {
                app: format!("feature-store/nats/{stream}"),
                partition: stream,
            }])
        }
    }
}

/// The offset a lane's `txn` has when nothing was committed: NATS sequences start at 1, Kafka
/// offsets at 0.
pub fn nothing_committed(source: &StreamSource) -> i64 {
    match source.kind.as_str() {
        "kafka" => -1,
        _ => 0,
    }
}

pub enum Reader {
    Nats(Box<NatsSource>),
    Kafka(KafkaSource),
}

impl Reader {
    /// Connect and read each lane from its offset in `from` (the next to read).
    pub async fn open(
        source: &StreamSource,
        lanes: &[LaneName],
        from: &[i64],
        auth: Auth<'_>,
    ) -> Result<Reader, String> {
        match source.kind.as_str() {
            "kafka" => {
                let partitions = lanes
                    .iter()
                    .map(|l| l.partition.parse::<i32>().map_err(|e| e.to_string()))
                    .collect::<Result<Vec<_>, _>>()?;
                Ok(Reader::Kafka(
                    KafkaSource::open(source, &partitions, from, auth.kafka).await?,
                ))
            }
            _ => {
                let from = from.first().copied().unwrap_or(1);
                let nats = NatsSource::open(source, from, auth.nats, auth.nats_tls).await?;
                Ok(Reader::Nats(Box::new(nats)))
            }
        }
    }

    /// The next message; an error when the reader cannot go on (the caller opens it again).
    pub async fn next(&mut self) -> Result<Received, String> {
        match self {
            Reader::Nats(nats) => nats.next().await,
            Reader::Kafka(kafka) => kafka.next().await,
        }
    }

    /// Why the source cannot be read now, if it cannot (it reconnects by itself meanwhile).
    pub async fn trouble(&mut self, source: &StreamSource) -> Option<String> {
        match self {
            Reader::Nats(nats) => (!nats.connected()).then(|| {
                format!(
                    "lost the connection to {}; reconnecting",
                    source.url.as_deref().unwrap_or_default()
                )
            }),
            Reader::Kafka(kafka) => kafka.trouble().await,
        }
    }
}
