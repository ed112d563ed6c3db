//! A Spark Connect session: the few RPCs a compute needs (execute a plan, analyze one,
//! interrupt, release), over a client generated from Spark's own protocol files.

use std::time::Duration;

use tonic::transport::{Channel, Endpoint};

use super::proto::{
    self as sc, analyze_plan_request, command::CommandType, execute_plan_response::ResponseType,
    plan::OpType, relation::RelType, spark_connect_service_client::SparkConnectServiceClient,
};
use super::SparkError;

/// Largest message accepted from Spark (its Arrow batches are about 4 MiB each).
const MAX_MESSAGE_BYTES: usize = 64 * 1024 * 1024;
/// How long connecting to the Spark Connect server may take before it counts as unreachable.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const CLIENT_TYPE: &str = "feature-store";

/// Where the cluster is: `sc://host:port` (Spark Connect's own URL form). Connections are made
/// when first used and shared by every session.
#[derive(Clone)]
pub struct Spark {
    url: String,
    channel: Channel,
}

impl std::fmt::Debug for Spark {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Spark").field("url", &self.url).finish()
    }
}

impl Spark {
    /// A client of the cluster at `url` (see `endpoint`). Needs a Tokio runtime.
    pub fn new(url: &str) -> Result<Spark, String> {
        let endpoint = Endpoint::from_shared(endpoint(url)?)
            .map_err(|e| format!("SPARK_CONNECT_URL={url:?}: {e}"))?
            .connect_timeout(CONNECT_TIMEOUT)
            .tcp_nodelay(true);
        Ok(Spark {
            url: url.trim().to_string(),
            channel: endpoint.connect_lazy(),
        })
    }

    /// A new session: its temporary views and settings are its own.
    pub fn session(&self) -> Session {
        Session {
            client: SparkConnectServiceClient::new(self.channel.clone())
                .max_decoding_message_size(MAX_MESSAGE_BYTES)
                .max_encoding_message_size(MAX_MESSAGE_BYTES),
            id: uuid::Uuid::new_v4().to_string(),
        }
    }
}

/// `sc://host[:port]` (port 15002 when not given) as the `http://host:port` gRPC reaches.
/// Spark Connect's `/;param=value` suffixes are refused: this client sends no token and uses
/// no TLS.
pub fn endpoint(url: &str) -> Result<String, String> {
    let rest = url
        .trim()
        .strip_prefix("sc://")
        .ok_or_else(|| format!("SPARK_CONNECT_URL={url:?}: expected sc://host:port"))?;
    let authority = rest.trim_end_matches('/');
    if authority.is_empty() || authority.contains(['/', ';', '@']) {
        return Err(format!(
            "SPARK_CONNECT_URL={url:?}: expected sc://host:port (no parameters)"
        ));
    }
    Ok(if authority.contains(':') {
        format!("http://{authority}")
    } else {
        format!("http://{authority}:15002")
    })
}

pub struct Session {
    client: SparkConnectServiceClient<Channel>,
    id: String,
}

fn user() -> Option<sc::UserContext> {
    Some(sc::UserContext {
        user_id: CLIENT_TYPE.into(),
        user_name: CLIENT_TYPE.into(),
        ..Default::default()
    })
}

/// A relation that runs `query`.
pub fn sql(query: &str) -> sc::Relation {
    relation(RelType::Sql(sc::Sql {
        query: query.into(),
        ..Default::default()
    }))
}

/// The rows of these Parquet files (their schema as the files say).
pub fn parquet(paths: &[String]) -> sc::Relation {
    relation(RelType::Read(sc::Read {
        read_type: Some(sc::read::ReadType::DataSource(sc::read::DataSource {
            format: Some("parquet".into()),
            paths: paths.to_vec(),
            ..Default::default()
        })),
        is_streaming: false,
    }))
}

/// The rows of `input` for which `condition` (a Spark SQL expression) holds.
pub fn filter(input: sc::Relation, condition: &str) -> sc::Relation {
    relation(RelType::Filter(Box::new(sc::Filter {
        input: Some(Box::new(input)),
        condition: Some(sc::Expression {
            expr_type: Some(sc::expression::ExprType::ExpressionString(
                sc::expression::ExpressionString {
                    expression: condition.into(),
                },
            )),
            ..Default::default()
        }),
    })))
}

fn relation(rel_type: RelType) -> sc::Relation {
    sc::Relation {
        common: None,
        rel_type: Some(rel_type),
    }
}

/// A column of a result, as Spark's analyzer types it.
#[derive(Debug, Clone)]
pub struct Field {
    pub name: String,
    pub kind: FieldKind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldKind {
    Decimal,
    Other,
}

impl Session {
    /// Run a plan and wait for it to end; whatever rows it returns are dropped (the commands
    /// and settings this is for return none).
    async fn execute(&mut self, op: OpType) -> Result<(), SparkError> {
        let request = sc::ExecutePlanRequest {
            session_id: self.id.clone(),
            user_context: user(),
            plan: Some(sc::Plan { op_type: Some(op) }),
            client_type: Some(CLIENT_TYPE.into()),
            operation_id: Some(uuid::Uuid::new_v4().to_string()),
            ..Default::default()
        };
        let mut stream = self
            .client
            .execute_plan(request)
            .await
            .map_err(SparkError::from_status)?
            .into_inner();
        // Drained to the end: an error can come after the first messages.
        while let Some(response) = stream.message().await.map_err(SparkError::from_status)? {
            if let Some(ResponseType::ArrowBatch(batch)) = response.response_type {
                tracing::debug!(
                    rows = batch.row_count,
                    "Spark returned rows that are not kept"
                );
            }
        }
        Ok(())
    }

    /// Run one SQL statement (a `SET`, say).
    pub async fn run_sql(&mut self, statement: &str) -> Result<(), SparkError> {
        self.execute(OpType::Root(sql(statement))).await
    }

    /// Register `input` as the temporary view `name` of this session.
    pub async fn create_view(&mut self, name: &str, input: sc::Relation) -> Result<(), SparkError> {
        self.execute(OpType::Command(sc::Command {
            command_type: Some(CommandType::CreateDataframeView(
                sc::CreateDataFrameViewCommand {
                    input: Some(input),
                    name: name.into(),
                    is_global: false,
                    replace: true,
                },
            )),
        }))
        .await
    }

    /// Write what `input` returns as Parquet files into the directory `path` (replacing it).
    pub async fn write_parquet(
        &mut self,
        input: sc::Relation,
        path: &str,
    ) -> Result<(), SparkError> {
        self.execute(OpType::Command(sc::Command {
            command_type: Some(CommandType::WriteOperation(sc::WriteOperation {
                input: Some(input),
                source: Some("parquet".into()),
                save_type: Some(sc::write_operation::SaveType::Path(path.into())),
                mode: sc::write_operation::SaveMode::Overwrite as i32,
                ..Default::default()
            })),
        }))
        .await
    }

    /// The columns `query` would return, from Spark's analyzer: the SQL is checked (names,
    /// types, functions) without running it.
    pub async fn schema(&mut self, query: &str) -> Result<Vec<Field>, SparkError> {
        let request = sc::AnalyzePlanRequest {
            session_id: self.id.clone(),
            user_context: user(),
            client_type: Some(CLIENT_TYPE.into()),
            analyze: Some(analyze_plan_request::Analyze::Schema(
                analyze_plan_request::Schema {
                    plan: Some(sc::Plan {
                        op_type: Some(OpType::Root(sql(query))),
                    }),
                },
            )),
            ..Default::default()
        };
        let response = self
            .client
            .analyze_plan(request)
            .await
            .map_err(SparkError::from_status)?
            .into_inner();
        let Some(sc::analyze_plan_response::Result::Schema(schema)) = response.result else {
            return Err(SparkError::Protocol(
                "the analysis returned no schema".into(),
            ));
        };
        let Some(sc::data_type::Kind::Struct(fields)) = schema.schema.and_then(|t| t.kind) else {
            return Err(SparkError::Protocol(
                "the result is not a struct of columns".into(),
            ));
        };
        Ok(fields
            .fields
            .into_iter()
            .map(|f| Field {
                kind: match f.data_type.and_then(|t| t.kind) {
                    Some(sc::data_type::Kind::Decimal(_)) => FieldKind::Decimal,
                    _ => FieldKind::Other,
                },
                name: f.name,
            })
            .collect())
    }

    /// Cancel everything this session runs (a time limit passed).
    pub async fn interrupt(&mut self) {
        let request = sc::InterruptRequest {
            session_id: self.id.clone(),
            user_context: user(),
            client_type: Some(CLIENT_TYPE.into()),
            interrupt_type: sc::interrupt_request::InterruptType::All as i32,
            ..Default::default()
        };
        if let Err(e) = self.client.interrupt(request).await {
            tracing::warn!(error = %e.message(), "could not interrupt a Spark operation");
        }
    }

    /// End the session on the server: its views and cached state go.
    pub async fn release(mut self) {
        let request = sc::ReleaseSessionRequest {
            session_id: self.id.clone(),
            user_context: user(),
            client_type: Some(CLIENT_TYPE.into()),
            ..Default::default()
        };
        if let Err(e) = self.client.release_session(request).await {
            tracing::debug!(error = %e.message(), "could not release a Spark session");
        }
    }
}
