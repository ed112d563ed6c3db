//! OpenAPI document, Swagger UI at /docs and ReDoc at /redoc, all served from the binary
//! (Swagger UI vendored by utoipa-swagger-ui, ReDoc's bundle under assets/redoc).

use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE};
use axum::response::{Html, IntoResponse};
use axum::routing::get;
use axum::Router;
use utoipa::OpenApi;
use utoipa_swagger_ui::SwaggerUi;

use crate::model;
use crate::AppState;

#[derive(OpenApi)]
#[openapi(
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
        super::features::create,
        super::features::list,
        super::features::get_one,
        super::features::delete,
        super::versions::create,
        super::versions::list,
        super::versions::get_one,
        super::versions::set_status,
        super::versions::delete,
        super::compute::compute,
        super::vectors::get_vector,
        super::vectors::get_batch,
        super::ingest::ingest_rows,
    ),
    components(schemas(
        model::Health,
        model::Readiness,
        model::RawTableCreate,
        model::RawTable,
        model::RawTablePreview,
        model::FeatureCreate,
        model::Feature,
        model::VersionStatus,
        model::VersionCreate,
        model::VersionStatusUpdate,
        model::FeatureVersion,
        model::ComputeRequest,
        model::ComputeResponse,
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
