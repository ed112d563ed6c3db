//! NATS JetStream as a source: an ordered consumer (ephemeral, no acks, no consumer group)
//! that starts at the sequence after the last one committed to the table. The stream's
//! sequences are the offsets; the stream is the one partition.

use std::time::Duration;

use async_nats::connection::State;
use async_nats::jetstream::{
    self,
    consumer::{
        pull::{Ordered, OrderedConfig},
        DeliverPolicy,
    },
};
use futures::StreamExt;

use super::source::Received;
use crate::config::{NatsAuth, NatsTls};
use crate::engine::messages::Message;
use crate::model::StreamSource;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

pub struct NatsSource {
    client: async_nats::Client,
    messages: Ordered,
    /// `stream {name} at {url}`, for errors.
    what: String,
}

impl NatsSource {
    /// Connect and start reading at `from` (a stream sequence, 1 or more).
    pub async fn open(
        source: &StreamSource,
        from: i64,
        auth: &NatsAuth,
        tls: &NatsTls,
    ) -> Result<NatsSource, String> {
        let url = source.url.as_deref().unwrap_or_default();
        let name = source.stream.as_deref().unwrap_or_default();
        let options = match auth {
            NatsAuth::None => async_nats::ConnectOptions::new(),
            NatsAuth::Token(token) => async_nats::ConnectOptions::with_token(token.clone()),
            NatsAuth::UserPassword(user, password) => {
                async_nats::ConnectOptions::with_user_and_password(user.clone(), password.clone())
            }
        };
        let mut options = options.require_tls(tls.is_set());
        if let Some(ca) = &tls.ca_file {
            options = options.add_root_certificates(ca.into());
        }
        if let (Some(cert), Some(key)) = (&tls.cert_file, &tls.key_file) {
            options = options.add_client_certificate(cert.into(), key.into());
        }
        let client = options
            .connection_timeout(CONNECT_TIMEOUT)
            .connect(url)
            .await
            .map_err(|e| format!("could not connect to {url}: {e}"))?;
        let stream = jetstream::new(client.clone())
            .get_stream(name)
            .await
            .map_err(|e| format!("could not open JetStream stream {name:?} at {url}: {e}"))?;
        let consumer = stream
            .create_consumer(OrderedConfig {
                filter_subject: source.subject.clone().unwrap_or_default(),
                deliver_policy: DeliverPolicy::ByStartSequence {
                    start_sequence: from.max(1) as u64,
                },
                ..Default::default()
            })
            .await
            .map_err(|e| format!("could not read JetStream stream {name:?}: {e}"))?;
        let messages = consumer
            .messages()
            .await
            .map_err(|e| format!("could not read JetStream stream {name:?}: {e}"))?;
        Ok(NatsSource {
            client,
            messages,
            what: format!("stream {name:?} at {url}"),
        })
    }

    /// The next message; an error when the consumer fails (the caller opens it again).
    pub async fn next(&mut self) -> Result<Received, String> {
        match self.messages.next().await {
            Some(Ok(message)) => {
                let info = message.info().map_err(|e| e.to_string())?;
                let (offset, pending) = (info.stream_sequence as i64, info.pending);
                Ok(Received {
                    lane: 0,
                    message: Message {
                        offset,
                        payload: message.message.payload,
                    },
                    pending,
                })
            }
            Some(Err(e)) => Err(format!("reading {} failed: {e}", self.what)),
            None => Err(format!("the consumer of {} ended", self.what)),
        }
    }

    /// Whether the connection is up now (it reconnects by itself when it is not).
    pub fn connected(&self) -> bool {
        self.client.connection_state() == State::Connected
    }
}
