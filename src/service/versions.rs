use crate::error::{AppError, Result};
use crate::model::{now, FeatureVersion, VersionCreate, VersionStatus};
use crate::store::StoreError;
use crate::store::VersionRow;
use crate::AppState;

use super::{check_label, features};

pub const MAX_VERSION_LEN: usize = 100;

pub fn not_found(id: i64) -> AppError {
    AppError::NotFound(format!("Feature version with ID {id} not found"))
}

pub fn duplicate(version: &str, feature_id: i64) -> AppError {
    AppError::BadRequest(format!(
        "Version '{version}' already exists for feature {feature_id}"
    ))
}

/// Create a version that snapshots the feature's current SQL and entity key.
pub async fn create(
    state: &AppState,
    feature_id: i64,
    req: VersionCreate,
) -> Result<FeatureVersion> {
    if let Some(body_id) = req.feature_id {
        if body_id != feature_id {
            return Err(AppError::BadRequest(format!(
                "feature_id in the body ({body_id}) does not match the feature in the path ({feature_id})"
            )));
        }
    }
    check_label("version", &req.version, MAX_VERSION_LEN)?;
    let feature = features::get_row(state, feature_id).await?;
    let row = state
        .store
        .create_version(
            feature_id,
            &req.version,
            req.status.as_str(),
            &feature.computation_logic,
            &feature.entity_key,
            now(),
        )
        .await
        .map_err(|e| match e {
            StoreError::Duplicate => duplicate(&req.version, feature_id),
            StoreError::StillReferenced => features::not_found(feature_id),
            e => e.into(),
        })?;
    // No cache change: serving by name only considers computed versions.
    Ok(row.into())
}

pub async fn list(state: &AppState, feature_id: i64) -> Result<Vec<FeatureVersion>> {
    features::get_row(state, feature_id).await?;
    Ok(state
        .store
        .list_versions(feature_id)
        .await?
        .into_iter()
        .map(Into::into)
        .collect())
}

/// A version of this feature; a version of another feature is not found here.
pub async fn get_row(state: &AppState, feature_id: i64, version_id: i64) -> Result<VersionRow> {
    features::get_row(state, feature_id).await?;
    match state.store.get_version(version_id).await? {
        Some(v) if v.feature_id == feature_id => Ok(v),
        _ => Err(not_found(version_id)),
    }
}

pub async fn get(state: &AppState, feature_id: i64, version_id: i64) -> Result<FeatureVersion> {
    Ok(get_row(state, feature_id, version_id).await?.into())
}

/// Activate, deprecate or archive a version; "latest" serving follows at once.
pub async fn set_status(
    state: &AppState,
    feature_id: i64,
    version_id: i64,
    status: VersionStatus,
) -> Result<FeatureVersion> {
    get_row(state, feature_id, version_id).await?;
    let state = state.clone();
    super::detached(async move {
        let (row, change) = state
            .store
            .set_version_status(version_id, status.as_str(), now())
            .await?
            .ok_or_else(|| not_found(version_id))?;
        state.cache.advance(change as u64).await;
        Ok(row.into())
    })
    .await
}

pub async fn delete(state: &AppState, feature_id: i64, version_id: i64) -> Result<()> {
    get_row(state, feature_id, version_id).await?;
    let state = state.clone();
    super::detached(async move {
        let change = state
            .store
            .delete_version(version_id)
            .await?
            .ok_or_else(|| not_found(version_id))?;
        state.cache.advance(change as u64).await;
        Ok(())
    })
    .await
}
