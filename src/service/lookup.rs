//! Rows by id, or the 404 a client is told: what every service looks up, in one place, so no
//! service calls another for it.

use crate::error::{AppError, Result};
use crate::store::{FeatureRow, RawTableRow, VersionRow};
use crate::AppState;

pub fn feature_not_found(id: i64) -> AppError {
    AppError::NotFound(format!("Feature with ID {id} not found"))
}

pub fn version_not_found(id: i64) -> AppError {
    AppError::NotFound(format!("Feature version with ID {id} not found"))
}

pub fn table_not_found(id: i64) -> AppError {
    AppError::NotFound(format!("Raw table with ID {id} not found"))
}

pub async fn feature(state: &AppState, id: i64) -> Result<FeatureRow> {
    state
        .store
        .get_feature(id)
        .await?
        .ok_or_else(|| feature_not_found(id))
}

/// A version of this feature; a version of another feature is not found here.
pub async fn version(state: &AppState, feature_id: i64, version_id: i64) -> Result<VersionRow> {
    feature(state, feature_id).await?;
    match state.store.get_version(version_id).await? {
        Some(v) if v.feature_id == feature_id => Ok(v),
        _ => Err(version_not_found(version_id)),
    }
}

pub async fn table(state: &AppState, id: i64) -> Result<RawTableRow> {
    state
        .store
        .get_raw_table(id)
        .await?
        .ok_or_else(|| table_not_found(id))
}
