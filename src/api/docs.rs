//! OpenAPI document, Swagger UI at /docs and ReDoc at /redoc, all served from the binary
//! (Swagger UI vendored by utoipa-swagger-ui, ReDoc's bundle under assets/redoc).

use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE};
use axum::response::{Html, IntoResponse};
use axum::routing::get;
use axum::Router;
use utoipa::{Modify, OpenApi};
use utoipa_swagger_ui::SwaggerUi;

use crate::model;
use crate::service::AppState;

#[derive(OpenApi)]
#[openapi(
    modifiers(&CommonResponses, &SchemaDefinition, &EntityKeys),
    info(
        title = "feature-store",
        description = "Register raw tables, ingest rows, define features as SQL, compute immutable versions and serve feature vectors."
    ),
    paths(
        super::health::health,
        super::health::ready,
        super::raw_tables::create,
        super::raw_tables::list,
        super::raw_tables::get_one,
        super::raw_tables::delete,
        super::raw_tables::preview,
        super::raw_tables::upload,
        super::streams::follow,
        super::streams::show,
        super::streams::stop,
        super::features::create,
        super::features::list,
        super::features::get_one,
        super::features::delete,
        super::versions::create,
        super::versions::list,
        super::versions::get_one,
        super::versions::update,
        super::versions::delete,
        super::compute::compute,
        super::history::list,
        super::history::backfill,
        super::jobs::list,
        super::stats::of_snapshot,
        super::stats::of_newest,
        super::stats::drift,
        super::training::build,
        super::training::write_dataset,
        super::vectors::get_vector,
        super::vectors::get_batch,
        super::ingest::ingest_rows,
    ),
    components(schemas(
        model::Health,
        model::Readiness,
        model::RawTableCreate,
        model::RawTableSource,
        model::SourceFormat,
        model::RawTable,
        model::RawTablePreview,
        model::StreamSource,
        model::StreamPartition,
        model::StreamResponse,
        model::FeatureCreate,
        model::Feature,
        model::VersionStatus,
        model::VersionCreate,
        model::VersionUpdate,
        model::FeatureVersion,
        model::ComputeRequest,
        model::ComputeBody,
        model::ComputeResponse,
        model::BackfillRequest,
        model::Snapshot,
        model::Job,
        model::SnapshotStats,
        model::Drift,
        model::TrainingSetRequest,
        model::TrainingDatasetRequest,
        model::LabelsRequest,
        model::TrainingDataset,
        model::LabelsRead,
        model::FeatureRef,
        model::BatchRequest,
        model::BatchResponse,
        model::BatchRow,
        model::FeatureVector,
        model::IngestRequest,
        model::IngestResponse,
        model::ErrorBody,
        model::ErrorDetail,
        model::ValidationError,
    ))
)]
pub struct ApiDoc;

/// Answers any /api/v1 operation can give, declared once rather than on every handler: 401
/// (API keys configured), 503 (database busy past `DATABASE_BUSY_TIMEOUT_MS`), and for
/// operations with a body 413 and 415. Also the two ways to send a key.
struct CommonResponses;

impl Modify for CommonResponses {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder};
        use utoipa::openapi::security::{SecurityRequirement, SecurityScheme};
        use utoipa::openapi::{ContentBuilder, Ref, ResponseBuilder};

        let error = |description: &str| {
            ResponseBuilder::new()
                .description(description)
                .content(
                    "application/json",
                    ContentBuilder::new()
                        .schema(Some(Ref::from_schema_name("ErrorBody")))
                        .build(),
                )
                .build()
        };
        let security = vec![
            SecurityRequirement::default(),
            SecurityRequirement::new("bearer", Vec::<String>::new()),
            SecurityRequirement::new("api_key", Vec::<String>::new()),
        ];
        for (path, item) in openapi.paths.paths.iter_mut() {
            if !path.starts_with("/api/v1/") {
                continue;
            }
            let operations = [
                &mut item.get,
                &mut item.post,
                &mut item.patch,
                &mut item.delete,
            ];
            for op in operations.into_iter().flatten() {
                let has_body = op.request_body.is_some();
                let responses = &mut op.responses.responses;
                responses.entry("401".into()).or_insert_with(|| {
                    error("API keys are configured and none, or an unknown one, was sent").into()
                });
                responses.entry("503".into()).or_insert_with(|| {
                    error("The database is busy; retry after the Retry-After header's seconds")
                        .into()
                });
                if has_body {
                    responses
                        .entry("413".into())
                        .or_insert_with(|| error("The body is larger than MAX_BODY_BYTES").into());
                    responses.entry("415".into()).or_insert_with(|| {
                        error("The body's Content-Type is not one this operation reads").into()
                    });
                }
                op.security = Some(security.clone());
            }
        }
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
        components.add_security_scheme(
            "api_key",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::new("X-API-Key"))),
        );
    }
}

/// `entity_key` is one column name or a list of 1 to 4 (`crate::keys::EntityKey`): set here,
/// as utoipa derives one type per field.
struct EntityKeys;

impl Modify for EntityKeys {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::schema::{ArrayBuilder, ObjectBuilder, OneOfBuilder, Schema, Type};
        use utoipa::openapi::RefOr;
        let Some(components) = openapi.components.as_mut() else {
            return;
        };
        for body in ["FeatureCreate", "Feature", "FeatureVersion"] {
            let Some(RefOr::T(Schema::Object(body))) = components.schemas.get_mut(body) else {
                continue;
            };
            let Some(RefOr::T(Schema::Object(one))) = body.properties.get("entity_key") else {
                continue;
            };
            let mut one = one.clone();
            one.description = None;
            one.example = None;
            let many = ArrayBuilder::new()
                .items(RefOr::T(Schema::Object(one.clone())))
                .min_items(Some(1))
                .max_items(Some(crate::keys::MAX_COLUMNS));
            let either = OneOfBuilder::new()
                .item(ObjectBuilder::from(one).schema_type(Type::String))
                .item(many)
                .description(Some(
                    "The column that names the entity, or a list of 1 to 4 columns that name it \
                     together ([\"user_id\", \"merchant_id\"])",
                ));
            body.properties
                .insert("entity_key".into(), RefOr::T(Schema::OneOf(either.build())));
        }
    }
}

/// `RawTableCreate.schema_definition`'s exact shape: which names and type spellings the engine
/// accepts. Set here so that `model` need not know the engine.
struct SchemaDefinition;

impl Modify for SchemaDefinition {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::schema::Schema;
        use utoipa::openapi::RefOr;
        let body = openapi
            .components
            .as_mut()
            .and_then(|c| c.schemas.get_mut("RawTableCreate"));
        if let Some(RefOr::T(Schema::Object(body))) = body {
            if let Some(property) = body.properties.get_mut("schema_definition") {
                *property = RefOr::T(Schema::Object(schema_definition()));
            }
        }
    }
}

/// Column name -> type: names are plain SQL identifiers, types one of `TYPE_NAMES` in any case.
fn schema_definition() -> utoipa::openapi::schema::Object {
    use utoipa::openapi::schema::{ObjectBuilder, Type};
    let spellings: Vec<String> = crate::engine::schema::TYPE_NAMES
        .iter()
        .map(|(name, _)| {
            name.chars()
                .map(|c| match c.is_ascii_alphabetic() {
                    true => format!("[{}{}]", c, c.to_ascii_uppercase()),
                    false => c.to_string(),
                })
                .collect()
        })
        .collect();
    let type_name = ObjectBuilder::new()
        .schema_type(Type::String)
        .pattern(Some(format!(r"^\s*({})\s*$", spellings.join("|"))))
        .description(Some(crate::engine::schema::SUPPORTED_TYPES));
    let column_name = ObjectBuilder::new()
        .schema_type(Type::String)
        .pattern(Some("^[A-Za-z_][A-Za-z0-9_]*$"))
        .max_length(Some(crate::engine::schema::MAX_IDENTIFIER_LEN));
    ObjectBuilder::new()
        .schema_type(utoipa::openapi::schema::SchemaType::from_iter([
            Type::Object,
            Type::Null,
        ]))
        .additional_properties(Some(type_name))
        .property_names(Some(column_name))
        .description(Some("Column name -> type"))
        .build()
}

const REDOC_JS: &[u8] = include_bytes!("../../assets/redoc/redoc.standalone.js");

const REDOC_PAGE: &str = r#"<!DOCTYPE html>
<html>
  <head>
    <title>feature-store - ReDoc</title>
    <meta charset="utf-8"/>
    <meta name="viewport" content="width=device-width, initial-scale=1">
  </head>
  <body>
    <redoc spec-url="/openapi.json"></redoc>
    <script src="/redoc/redoc.standalone.js"></script>
  </body>
</html>"#;

pub fn router() -> Router<AppState> {
    Router::new()
        .merge(SwaggerUi::new("/docs").url("/openapi.json", ApiDoc::openapi()))
        .route("/redoc", get(|| async { Html(REDOC_PAGE) }))
        .route(
            "/redoc/redoc.standalone.js",
            get(|| async {
                (
                    [
                        (CONTENT_TYPE, "application/javascript"),
                        (CACHE_CONTROL, "public, max-age=86400"),
                    ],
                    REDOC_JS,
                )
                    .into_response()
            }),
        )
}
